"""The container runtime on the ``workers`` group: containerd with runc and the CNI plugins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kubernetes import CNI_BIN_DIR, CNI_CONF_DIR
from galley.components.model import (
    Component,
    Config,
    Configured,
    Directory,
    Unit,
    github_artifact,
)

CONFIG = "/etc/containerd/config.toml"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    operation = render(
        CONTAINERD.config(CONFIG),
        cluster_name=host.data.cluster_name,
        sandbox_image=host.data.sandbox_image,
        cni_bin_dir=CNI_BIN_DIR,
        cni_conf_dir=CNI_CONF_DIR,
    )
    return Configured({CONFIG: operation}, {"containerd_config": CONFIG})


CONTAINERD = Component(
    name="containerd",
    group="workers",
    phase="workers",
    artifacts=(
        github_artifact(
            "containerd",
            "containerd/containerd",
            "containerd-{version}-linux-{arch}.tar.gz",
            "{file}.sha256sum",
            ("containerd", "containerd-shim-runc-v2", "ctr"),
        ),
        github_artifact(
            "runc", "opencontainers/runc", "runc.{arch}", "runc.sha256sum", ("runc",), archive=False
        ),
        github_artifact(
            "cni_plugins",
            "containernetworking/plugins",
            "cni-plugins-linux-{arch}-v{version}.tgz",
            "{file}.sha256",
            CNI_PLUGINS,
            bin_dir=CNI_BIN_DIR,
        ),
    ),
    configs=(Config(CONFIG, "containerd/containerd-config.toml.j2"),),
    unit=Unit("containerd", "containerd/containerd.service.j2"),
    directories=(Directory("/etc/containerd"), Directory(CNI_CONF_DIR), Directory(CNI_BIN_DIR)),
    configure=_configure,
)
