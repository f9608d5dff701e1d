"""The kubelet on the ``workers`` group.

It registers under the host's inventory name (``--hostname-override``), which is also the CN of
its client certificate (``system:node:<name>``, O ``system:nodes``), so the Node authorizer lets
it manage exactly its own Node object. Its serving certificate is signed by the cluster CA too,
so the apiservers verify kubelets (``--kubelet-certificate-authority``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kubernetes import (
    CA_PATH,
    K8S_DIR,
    NODE_ROLE,
    NODE_SERVING_ROLE,
    PKI_DIR,
    api_url,
    cluster_dns_ip,
    k8s_cert,
    kubeconfig,
    kubernetes_binary,
    node_identity,
    node_name,
)
from galley.components.model import (
    Component,
    Config,
    Configured,
    Directory,
    Metrics,
    Port,
    Unit,
)
from galley.settings import COUNT, Setting
from galley.vault.pki import Identity

CONFIG = "/var/lib/kubelet/config.yaml"
KUBECONFIG = f"{K8S_DIR}/kubelet.kubeconfig"
CLIENT = k8s_cert("kubelet", NODE_ROLE, node_identity)
WORKER_DIRECTORIES = (Directory(K8S_DIR), Directory(PKI_DIR, "700"))
PORT = 10250  # its API, on the private address (the apiservers' logs, exec, metrics)
# The Node Lease's duration in seconds; the kubelet renews it (its heartbeat) every quarter of
# that. None: the kubelet's default (`NODE_LEASE_DEFAULT_SECONDS`, renewed every 10 s).
NODE_LEASE_SECONDS = Setting("kubelet_node_lease_seconds", None, COUNT)
NODE_LEASE_DEFAULT_SECONDS = 40


def _serving_identity(host: Host) -> Identity:
    return Identity(node_name(host), (node_name(host),), (host.data.private_ip,))


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    data = host.data
    written = {
        KUBECONFIG: kubeconfig(host, KUBECONFIG, api_url(host), CLIENT),
        CONFIG: render(
            KUBELET.config(CONFIG),
            cluster_name=data.cluster_name,
            cluster_domain=data.cluster_domain,
            cluster_dns=str(cluster_dns_ip(data.service_cidr)),
            private_ip=data.private_ip,
            port=PORT,
            ca_path=CA_PATH,
            certs=KUBELET.certs_by_stem(host),
            node_lease_seconds=NODE_LEASE_SECONDS.of(data),
        ),
    }
    variables = {
        "kubeconfig": KUBECONFIG,
        "kubelet_config": CONFIG,
        "node_name": node_name(host),
        "private_ip": data.private_ip,
    }
    return Configured(written, variables)


KUBELET = Component(
    name="kubelet",
    group="workers",
    phase="workers",
    artifacts=(kubernetes_binary("kubelet"),),
    certs=(CLIENT, k8s_cert("kubelet-serving", NODE_SERVING_ROLE, _serving_identity)),
    configs=(
        Config(KUBECONFIG, "kubernetes/kubeconfig.j2", mode="600"),
        Config(CONFIG, "kubelet/kubelet-config.yaml.j2"),
    ),
    unit=Unit("kubelet", "kubelet/kubelet.service.j2"),
    ports=(Port(PORT, ("control_plane",)),),
    metrics=(Metrics("kubelet", PORT, mount="k8s"),),
    directories=(*WORKER_DIRECTORIES, Directory("/var/lib/kubelet", "700")),
    checks=("networks", "api"),
    settings=(NODE_LEASE_SECONDS,),
    configure=_configure,
)
