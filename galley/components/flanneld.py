"""flanneld on every Kubernetes node (the ``workers`` group): the pod network overlay.

Two modes (``flannel_mode``):

- ``kube`` (default): ``--kube-subnet-mgr``; flanneld reads every node's pod subnet from the
  Node objects and stores its lease in its own. It logs in as ``flannel:<node>`` in group
  ``galley:flannel``, which the ClusterRole ``galley:flannel`` lets watch the nodes and patch
  their status (flannel's own ClusterRole upstream); the node's own identity cannot list
  other nodes (the Node authorizer), and workers hold no etcd credentials.
- ``etcd``: leases in etcd under ``/coreos.com/network``; the network config is written once
  by the first etcd member (`flannel_etcd_network`), and flanneld gets its own etcd client
  certificate (CN ``flannel-etcd-client``).

The network config (``Network`` = ``pod_cidr``, ``SubnetLen``, ``Backend`` from
``flannel_backend``) comes from group data in both modes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.host import Host
from pyinfra.facts.server import Command
from pyinfra.operations import server

from galley.components.engine import render
from galley.components.etcd import etcd_client_cert
from galley.components.kubelet import WORKER_DIRECTORIES
from galley.components.kubernetes import (
    ETCD_CA_PATH,
    K8S_DIR,
    api_url,
    etcd_servers,
    k8s_cert,
    kubeconfig,
    node_name,
)
from galley.components.model import (
    Component,
    Config,
    Configured,
    Directory,
    Port,
    Unit,
    cluster_role,
    cluster_role_binding,
    github_artifact,
)
from galley.etcd.access import READWRITE, Grant
from galley.etcd.etcdctl import LOCAL_ENDPOINT, etcdctl_command
from galley.etcd.group import members
from galley.vault.pki import Identity, RoleSpec

FLANNEL_DIR = "/etc/kube-flannel"
NET_CONF = f"{FLANNEL_DIR}/net-conf.json"
KUBECONFIG = f"{K8S_DIR}/flannel.kubeconfig"
ETCD_PREFIX = "/coreos.com/network"


def _kube_mode(target: Host) -> bool:
    return target.data.flannel_mode != "etcd"


def _etcd_mode(target: Host) -> bool:
    return target.data.flannel_mode == "etcd"


# flannel's VXLAN backend: UDP to its port (the kernel's 8472 unless the backend says).
VXLAN_PORT = 8472


def _vxlan(target: Host) -> bool:
    return str(target.data.flannel_backend.get("Type", "")).lower() == "vxlan"


# flanneld's identity in kube mode, one per node, and what its group may do.
FLANNEL_GROUP = "galley:flannel"
KUBE_CLIENT_ROLE = RoleSpec(
    "flannel", "k8s", enforce_hostnames=False, organization=(FLANNEL_GROUP,)
)
KUBE_CLIENT = k8s_cert(
    "flannel",
    KUBE_CLIENT_ROLE,
    lambda host: Identity(f"flannel:{node_name(host)}", organization=(FLANNEL_GROUP,)),
    when=_kube_mode,
)
RBAC = (
    cluster_role(
        FLANNEL_GROUP,
        [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        ],
    ),
    cluster_role_binding(FLANNEL_GROUP, FLANNEL_GROUP, "Group", FLANNEL_GROUP),
)
ETCD_CLIENT = etcd_client_cert(
    "etcd-client",
    "flannel-etcd-client",
    f"{FLANNEL_DIR}/pki",
    ETCD_CA_PATH,
    (Grant(READWRITE, f"{ETCD_PREFIX}/", prefix=True),),
    when=_etcd_mode,
)


def net_conf(data) -> dict:
    """flannel's network config from group data."""
    return {
        "Network": data.pod_cidr,
        "SubnetLen": data.node_cidr_mask_size,
        "Backend": dict(data.flannel_backend),
    }


def flanneld_args(target: Host) -> list[str]:
    """flanneld's command-line flags for ``target``, in its configured mode."""
    data = target.data
    if _etcd_mode(target):
        mode = [
            f"--etcd-endpoints={etcd_servers(target.inventory)}",
            f"--etcd-prefix={ETCD_PREFIX}",
            f"--etcd-cafile={ETCD_CLIENT.ca_path}",
            f"--etcd-certfile={ETCD_CLIENT.cert_path}",
            f"--etcd-keyfile={ETCD_CLIENT.key_path}",
        ]
    else:
        mode = [
            "--kube-subnet-mgr",
            f"--kubeconfig-file={KUBECONFIG}",
            f"--net-config-path={NET_CONF}",
        ]
    return [*mode, f"--iface={data.private_ip}", f"--public-ip={data.private_ip}", "--ip-masq"]


def _configure(target: Host, context: Mapping[str, Any]) -> Configured:
    data = target.data
    written = {}
    if _kube_mode(target):
        written[KUBECONFIG] = kubeconfig(target, KUBECONFIG, api_url(target), KUBE_CLIENT)
    written[NET_CONF] = render(FLANNELD.config(NET_CONF), net_conf=net_conf(data))
    variables = {
        "flannel_mode": data.flannel_mode,
        "node_name": node_name(target),
        "flannel_args": flanneld_args(target),
    }
    return Configured(written, variables)


def flannel_network() -> None:
    """The flannel phase's step on every host: in etcd mode the first etcd member writes the
    network config to etcd (before any flanneld starts)."""
    etcd = members()
    if host.data.flannel_mode == "etcd" and etcd and host == etcd[0]:
        flannel_etcd_network()


@deploy("flannel network config in etcd")
def flannel_etcd_network() -> None:
    """Write flannel's network config to etcd once (run on one etcd member, in etcd mode).

    An existing config that differs from group data is an error: changing it under running
    nodes would re-address the pod network.
    """
    wanted = net_conf(host.data)
    key = f"{ETCD_PREFIX}/config"
    endpoint = [LOCAL_ENDPOINT]
    get = etcdctl_command(endpoint, "get", key, "--print-value-only")
    current = host.get_fact(Command, command=get + " 2>/dev/null || true")
    if current:
        if json.loads(current) != wanted:
            raise DeployError(
                f"flannel's network config in etcd ({current}) differs from group data "
                f"({json.dumps(wanted)}): changing it would re-address running pods; update "
                "group data or change etcd deliberately"
            )
        return
    value = shlex.quote(json.dumps(wanted, sort_keys=True))
    server.shell(
        name=f"Write flannel's network config to etcd {key}",
        commands=[f'[ -n "$({get})" ] || {etcdctl_command(endpoint, "put", key)} {value}'],
    )


FLANNELD = Component(
    name="flanneld",
    group="workers",
    phase="flannel",
    artifacts=(
        github_artifact(
            "flannel",
            "flannel-io/flannel",
            "flannel-v{version}-linux-{arch}.tar.gz",
            "{file}.sha256",
            ("flanneld",),
            strip_components=0,
        ),
    ),
    certs=(KUBE_CLIENT, ETCD_CLIENT),
    rbac=RBAC,
    ports=(
        Port(
            lambda host: int(host.data.flannel_backend.get("Port") or VXLAN_PORT),
            ("workers",),
            protocol="udp",
            when=_vxlan,
        ),
    ),
    configs=(
        Config(KUBECONFIG, "kubernetes/kubeconfig.j2", mode="600", when=_kube_mode),
        Config(NET_CONF, "flanneld/flannel-net-conf.json.j2"),
    ),
    unit=Unit("flanneld", "flanneld/flanneld.service.j2"),
    directories=(
        *WORKER_DIRECTORIES,
        Directory(FLANNEL_DIR),
        Directory(f"{FLANNEL_DIR}/pki", "700"),
    ),
    checks=("networks", "api", "flannel"),
    # Its masquerading and forwarding rules (the iptables backend).
    packages=("iptables",),
    configure=_configure,
)
