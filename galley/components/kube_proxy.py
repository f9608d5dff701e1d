"""kube-proxy on the ``workers`` group (``system:kube-proxy`` in ``system:node-proxier``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kubelet import WORKER_DIRECTORIES
from galley.components.kubernetes import (
    K8S_DIR,
    api_url,
    k8s_cert,
    kubeconfig,
    kubernetes_binary,
    node_name,
)
from galley.components.model import (
    LOAD_BALANCERS,
    Component,
    Config,
    Configured,
    Directory,
    Port,
    Unit,
)
from galley.settings import COUNT_OR_ZERO, Setting
from galley.vault.pki import Identity, RoleSpec

CONFIG = "/var/lib/kube-proxy/config.yaml"
KUBECONFIG = f"{K8S_DIR}/kube-proxy.kubeconfig"
HEALTHZ_PORT = 10256  # on the private address: load balancers' health checks
ROLE = RoleSpec("kube-proxy", "k8s", enforce_hostnames=False, organization=("system:node-proxier",))
CLIENT = k8s_cert(
    "kube-proxy",
    ROLE,
    lambda host: Identity("system:kube-proxy", organization=("system:node-proxier",)),
)

# kube-proxy's conntrack table size per CPU (it raises the kernel's nf_conntrack_max to that);
# None: kube-proxy's default (32768); 0: leave the kernel's value alone (where it cannot be
# set, e.g. without the host's sysctls, as in the lab's droplets).
CONNTRACK_MAX_PER_CORE = Setting("kube_proxy_conntrack_max_per_core", None, COUNT_OR_ZERO)


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    data = host.data
    written = {
        KUBECONFIG: kubeconfig(host, KUBECONFIG, api_url(host), CLIENT),
        CONFIG: render(
            KUBE_PROXY.config(CONFIG),
            cluster_name=data.cluster_name,
            kubeconfig=KUBECONFIG,
            node_name=node_name(host),
            private_ip=data.private_ip,
            healthz_port=HEALTHZ_PORT,
            pod_cidr=data.pod_cidr,
            conntrack_max_per_core=CONNTRACK_MAX_PER_CORE.of(data),
        ),
    }
    return Configured(written, {"kube_proxy_config": CONFIG})


KUBE_PROXY = Component(
    name="kube-proxy",
    group="workers",
    phase="workers",
    artifacts=(kubernetes_binary("kube-proxy"),),
    certs=(CLIENT,),
    configs=(
        Config(KUBECONFIG, "kubernetes/kubeconfig.j2", mode="600"),
        Config(CONFIG, "kube-proxy/kube-proxy-config.yaml.j2"),
    ),
    unit=Unit("kube-proxy", "kube-proxy/kube-proxy.service.j2"),
    directories=(*WORKER_DIRECTORIES, Directory("/var/lib/kube-proxy")),
    settings=(CONNTRACK_MAX_PER_CORE,),
    ports=(Port(HEALTHZ_PORT, (LOAD_BALANCERS,)),),
    checks=("networks", "api"),
    # iptables mode: kube-proxy runs iptables-restore and iptables-save (and nft to clean up
    # after its nftables mode at every start).
    packages=("iptables", "nftables"),
    configure=_configure,
)
