"""The container runtime on the ``workers`` group: containerd with runc and the CNI plugins,
pulling through ``registry_mirror`` (group data) first when one is set."""

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
from galley.settings import FLAG, IMAGE, REGISTRY_URL, Setting

CONFIG = "/etc/containerd/config.toml"
REGISTRY_CONFIG_DIR = "/etc/containerd/certs.d"
# containerd reads it for every pull of every registry without a directory of its own.
MIRROR_CONFIG = f"{REGISTRY_CONFIG_DIR}/_default/hosts.toml"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
# The pause image containerd runs as each pod's sandbox.
SANDBOX_IMAGE = Setting("sandbox_image", "registry.k8s.io/pause:3.10", IMAGE)
# A registry every image pull tries first (a pull-through mirror, e.g. "https://mirror:5000"),
# then the image's own registry; None: pull from each image's registry.
REGISTRY_MIRROR = Setting("registry_mirror", None, REGISTRY_URL)
# Where containerd may not lower a process's oom_score_adj (it lacks CAP_SYS_RESOURCE, e.g.
# nested in a container such as the lab's droplets): True keeps every container's at or above
# containerd's own instead of failing to start them.
RESTRICT_OOM_SCORE_ADJ = Setting("containerd_restrict_oom_score_adj", False, FLAG)


def _mirrored(host: Host) -> bool:
    return bool(REGISTRY_MIRROR.of(host.data))


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    files = {
        CONFIG: render(
            CONTAINERD.config(CONFIG),
            cluster_name=host.data.cluster_name,
            sandbox_image=SANDBOX_IMAGE.of(host.data),
            registry_config_dir=REGISTRY_CONFIG_DIR,
            restrict_oom_score_adj=RESTRICT_OOM_SCORE_ADJ.of(host.data),
            cni_bin_dir=CNI_BIN_DIR,
            cni_conf_dir=CNI_CONF_DIR,
        )
    }
    if _mirrored(host):
        files[MIRROR_CONFIG] = render(
            CONTAINERD.config(MIRROR_CONFIG),
            cluster_name=host.data.cluster_name,
            registry_mirror=REGISTRY_MIRROR.of(host.data),
        )
    return Configured(files, {"containerd_config": CONFIG})


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
    configs=(
        Config(CONFIG, "containerd/containerd-config.toml.j2"),
        # Read at every pull: a change restarts nothing.
        Config(MIRROR_CONFIG, "containerd/hosts.toml.j2", when=_mirrored, watched=False),
    ),
    unit=Unit("containerd", "containerd/containerd.service.j2"),
    settings=(SANDBOX_IMAGE, REGISTRY_MIRROR, RESTRICT_OOM_SCORE_ADJ),
    directories=(
        Directory("/etc/containerd"),
        Directory(REGISTRY_CONFIG_DIR),
        Directory(f"{REGISTRY_CONFIG_DIR}/_default"),
        Directory(CNI_CONF_DIR),
        Directory(CNI_BIN_DIR),
    ),
    configure=_configure,
)
