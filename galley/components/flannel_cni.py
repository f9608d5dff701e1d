"""flannel's CNI plugin on the ``workers`` group: the ``flannel`` type of the CNI config.

The meta plugin hands each pod to the bridge plugin with an address from the node's flannel
lease (the bridge and host-local plugins come with containerd's CNI plugins).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kubernetes import CNI_BIN_DIR, CNI_CONF_DIR
from galley.components.model import Component, Config, Configured, Directory, github_artifact

CNI_CONFIG = f"{CNI_CONF_DIR}/10-flannel.conflist"
PLUGIN = "flannel-{arch}"  # the binary in the tarball; linked as "flannel"


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    return Configured({CNI_CONFIG: render(FLANNEL_CNI.config(CNI_CONFIG))})


FLANNEL_CNI = Component(
    name="flannel-cni-plugin",
    group="workers",
    phase="flannel",
    artifacts=(
        github_artifact(
            "flannel_cni_plugin",
            "flannel-io/cni-plugin",
            "cni-plugin-flannel-linux-{arch}-v{version}.tgz",
            "{file}.sha256",
            (PLUGIN,),
            bin_dir=CNI_BIN_DIR,
            strip_components=0,
            link_names={PLUGIN: "flannel"},
        ),
    ),
    configs=(Config(CNI_CONFIG, "flannel-cni/10-flannel.conflist.j2"),),
    directories=(Directory(CNI_CONF_DIR),),
    checks=("networks", "api", "flannel"),
    configure=_configure,
)
