"""kube-controller-manager on the ``control_plane`` group; it talks to its local apiserver."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.kube_apiserver import CONTROL_PLANE_DIRECTORIES, SA_KEY
from galley.components.kubernetes import (
    CONTROL_PLANE_SERVING_ROLE,
    K8S_DIR,
    api_url,
    k8s_cert,
    kubeconfig,
    kubernetes_binary,
    local_serving_identity,
)
from galley.components.model import Component, Config, Configured, Metrics, Unit
from galley.settings import COUNT, Setting
from galley.vault.pki import Identity, RoleSpec

KUBECONFIG = f"{K8S_DIR}/controller-manager.kubeconfig"
# How long a Node's heartbeat may be missing before the controller manager marks it NotReady
# (``--node-monitor-grace-period``, in seconds). None: Kubernetes' default (50 s). It must stay
# well above the kubelets' node lease (kubelet_node_lease_seconds).
NODE_GRACE_SECONDS = Setting("node_monitor_grace_seconds", None, COUNT)
ROLE = RoleSpec("kube-controller-manager", "k8s", enforce_hostnames=False)
CLIENT = k8s_cert(
    "kube-controller-manager", ROLE, lambda host: Identity("system:kube-controller-manager")
)


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    data = host.data
    operation = kubeconfig(host, KUBECONFIG, api_url(host, local=True), CLIENT)
    variables = {
        "kubeconfig": KUBECONFIG,
        "private_ip": data.private_ip,
        "sa_key": SA_KEY,
        "service_cidr": data.service_cidr,
        "pod_cidr": data.pod_cidr,
        "node_cidr_mask_size": data.node_cidr_mask_size,
        # flannel's etcd mode allocates node subnets itself; its Kubernetes mode reads the
        # controller manager's allocation (node.spec.podCIDR).
        "allocate_node_cidrs": str(data.flannel_mode == "kube").lower(),
        "node_grace_seconds": NODE_GRACE_SECONDS.of(data),
    }
    return Configured({KUBECONFIG: operation}, variables)


# Its secure port (health, metrics), on the private address for the monitoring hosts.
PORT = 10257

KUBE_CONTROLLER_MANAGER = Component(
    name="kube-controller-manager",
    group="control_plane",
    phase="control plane",
    artifacts=(kubernetes_binary("kube-controller-manager"),),
    certs=(
        CLIENT,
        k8s_cert(
            "kube-controller-manager-serving", CONTROL_PLANE_SERVING_ROLE, local_serving_identity
        ),
    ),
    configs=(Config(KUBECONFIG, "kubernetes/kubeconfig.j2", mode="600"),),
    unit=Unit(
        "kube-controller-manager", "kube-controller-manager/kube-controller-manager.service.j2"
    ),
    directories=CONTROL_PLANE_DIRECTORIES,
    metrics=(Metrics("controller-manager", PORT, mount="k8s"),),
    watch=(SA_KEY,),
    settings=(NODE_GRACE_SECONDS,),
    checks=("networks", "api", "node_grace"),
    configure=_configure,
)
