"""kube-scheduler on the ``control_plane`` group; it talks to its local apiserver."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kube_apiserver import CONTROL_PLANE_DIRECTORIES
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
from galley.vault.pki import Identity, RoleSpec

KUBECONFIG = f"{K8S_DIR}/scheduler.kubeconfig"
CONFIG = f"{K8S_DIR}/kube-scheduler.yaml"
# Its secure port (health, metrics), on the private address for the monitoring hosts.
PORT = 10259
ROLE = RoleSpec("kube-scheduler", "k8s", enforce_hostnames=False)
CLIENT = k8s_cert("kube-scheduler", ROLE, lambda host: Identity("system:kube-scheduler"))


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    variables = {"kubeconfig": KUBECONFIG, "config_path": CONFIG}
    unit_variables = {**variables, "private_ip": host.data.private_ip}
    written = {
        KUBECONFIG: kubeconfig(host, KUBECONFIG, api_url(host, local=True), CLIENT),
        CONFIG: render(
            KUBE_SCHEDULER.config(CONFIG), cluster_name=host.data.cluster_name, **variables
        ),
    }
    return Configured(written, unit_variables)


KUBE_SCHEDULER = Component(
    name="kube-scheduler",
    group="control_plane",
    phase="control plane",
    artifacts=(kubernetes_binary("kube-scheduler"),),
    certs=(
        CLIENT,
        k8s_cert("kube-scheduler-serving", CONTROL_PLANE_SERVING_ROLE, local_serving_identity),
    ),
    configs=(
        Config(KUBECONFIG, "kubernetes/kubeconfig.j2", mode="600"),
        Config(CONFIG, "kube-scheduler/kube-scheduler.yaml.j2"),
    ),
    unit=Unit("kube-scheduler", "kube-scheduler/kube-scheduler.service.j2"),
    directories=CONTROL_PLANE_DIRECTORIES,
    metrics=(Metrics("scheduler", PORT, mount="k8s"),),
    checks=("api",),
    configure=_configure,
)
