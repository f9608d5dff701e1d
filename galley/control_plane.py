"""The control plane: kube-apiserver, kube-controller-manager and kube-scheduler as systemd units.

Each control-plane host gets the three binaries (raw downloads from dl.k8s.io, verified before
activation), Vault-signed certificates from the ``<cluster>/pki/k8s`` mount (plus the
apiserver's etcd client certificate from ``<cluster>/pki/etcd``), the shared service-account
key pair and encryption key from Vault's KV store, kubeconfigs and configuration files.
Units restart only when their files changed; apiservers restart one at a time, each healthy
(``/healthz``) again before the next.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable

import hvac
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.operations import files

from galley import cluster_secrets
from galley.admin import admin_credentials
from galley.kubernetes import (
    CA_PATH,
    ETCD_CA_PATH,
    K8S_DIR,
    PKI_DIR,
    api_url,
    control_plane_certs,
    control_plane_hosts,
    etcd_servers,
    install_certificates,
    install_kubernetes_binary,
    kubeconfig,
    run_units,
    template,
    unit_path,
)
from galley.release import active_paths
from galley.restarts import RestartError, systemctl_restart, wait_until_healthy

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ENCRYPTION_CONFIG = f"{K8S_DIR}/encryption-config.yaml"
SCHEDULER_CONFIG = f"{K8S_DIR}/kube-scheduler.yaml"
SA_KEY = f"{PKI_DIR}/sa.key"
SA_PUB = f"{PKI_DIR}/sa.pub"
HEALTH_TIMEOUT = 60.0


def healthz_command(port: int, path: str = "healthz") -> str:
    """curl this host's apiserver ``/healthz`` as the controller manager (prints ``ok``)."""
    return " ".join(
        [
            "curl -fsS --max-time 5",
            f"--cacert {CA_PATH}",
            f"--cert {PKI_DIR}/kube-controller-manager.crt",
            f"--key {PKI_DIR}/kube-controller-manager.key",
            shlex.quote(f"https://127.0.0.1:{port}/{path}"),
        ]
    )


def _healthy(host: Host, port: int) -> str | None:
    """None when the local apiserver answers ``ok``, else what it answered."""
    ok, output = host.run_shell_command(healthz_command(port) + " 2>&1")
    answer = (output.stdout or "").strip()
    return None if ok and answer == "ok" else answer or "no answer"


def _wait_healthy(state: State, host: Host, port: int, doing: str) -> None:
    problem = wait_until_healthy(lambda: _healthy(host, port), HEALTH_TIMEOUT)
    if problem is not None:
        raise RestartError(
            f"{host.name}: kube-apiserver not healthy {HEALTH_TIMEOUT:.0f}s after {doing}: "
            f"{problem}"
        )


def _restart_apiserver(state: State, host: Host, unit: str, port: int) -> None:
    """Restart this apiserver and wait for ``/healthz`` before the next host restarts."""
    systemctl_restart(state, host, unit)
    _wait_healthy(state, host, port, "its restart; stopping before any other apiserver restarts")


@deploy("Kubernetes control plane")
def control_plane(vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start this host's control-plane components."""
    data = host.data
    cluster = data.cluster_name
    for path, mode in host.loop(((K8S_DIR, "755"), (PKI_DIR, "700"))):
        files.directory(name=f"directory {path}", path=path, user="root", group="root", mode=mode)

    releases = {binary: install_kubernetes_binary(data, binary) for binary in host.loop(BINARIES)}
    specs = {spec.name: spec for spec in control_plane_certs(host)}
    certs = install_certificates(host, list(specs.values()), vault)

    shared = cluster_secrets.read(vault(), cluster)
    secrets = [
        files.put(
            name=f"service-account key {path}",
            src=io.StringIO(content),
            dest=path,
            user="root",
            group="root",
            mode=mode,
        )
        for path, content, mode in host.loop(
            (
                (SA_KEY, shared.service_account_key, "600"),
                (SA_PUB, shared.service_account_public_key, "644"),
            )
        )
    ]
    template_vars = {
        "cluster_name": cluster,
        "cluster_domain": data.cluster_domain,
        "private_ip": data.private_ip,
        "api_port": data.api_port,
        "pki_dir": PKI_DIR,
        "service_cidr": data.service_cidr,
        "pod_cidr": data.pod_cidr,
        "node_cidr_mask_size": data.node_cidr_mask_size,
        # flannel's etcd mode allocates node subnets itself; its Kubernetes mode reads the
        # controller manager's allocation (node.spec.podCIDR).
        "allocate_node_cidrs": str(data.flannel_mode == "kube").lower(),
        "etcd_servers": etcd_servers(host.inventory),
        "encryption_config": ENCRYPTION_CONFIG,
        "config_path": SCHEDULER_CONFIG,
        "kv_mount": cluster_secrets.kv_mount(cluster),
    }
    configs = {
        "kube-apiserver": [
            template(
                "encryption-config.yaml.j2",
                ENCRYPTION_CONFIG,
                "600",
                encryption_key=shared.encryption_key,
                **template_vars,
            )
        ],
        "kube-controller-manager": [
            kubeconfig(
                f"{K8S_DIR}/controller-manager.kubeconfig",
                cluster,
                api_url(data, local=True),
                specs["kube-controller-manager"],
            )
        ],
        "kube-scheduler": [
            kubeconfig(
                f"{K8S_DIR}/scheduler.kubeconfig",
                cluster,
                api_url(data, local=True),
                specs["kube-scheduler"],
            ),
            template(
                "kube-scheduler.yaml.j2",
                SCHEDULER_CONFIG,
                "644",
                kubeconfig=f"{K8S_DIR}/scheduler.kubeconfig",
                **template_vars,
            ),
        ],
    }
    units = {
        binary: template(
            f"{binary}.service.j2",
            unit_path(binary),
            "644",
            kubeconfig=f"{K8S_DIR}/{binary.removeprefix('kube-')}.kubeconfig",
            **template_vars,
        )
        for binary in host.loop(BINARIES)
    }
    changes: list[OperationMeta] = [
        *certs,
        *secrets,
        *(op for ops in configs.values() for op in ops),
        *units.values(),
        *(release.activation for release in releases.values()),
    ]
    port = data.api_port
    run_units(
        units,
        {binary: _watched(binary) for binary in BINARIES},
        changes,
        wait={"kube-apiserver": {"function": _wait_healthy, "port": port, "doing": "its start"}},
        restart={"kube-apiserver": {"function": _restart_apiserver, "serial": True, "port": port}},
    )
    if host == control_plane_hosts()[0]:
        admin_credentials(data, vault)


def _watched(binary: str) -> list[str]:
    """The files ``binary`` runs from: newer than its start means it must restart."""
    common = [*active_paths(binary, binary), unit_path(binary), CA_PATH]
    pairs = {
        "kube-apiserver": ("apiserver", "apiserver-kubelet-client", "apiserver-etcd-client"),
        "kube-controller-manager": ("kube-controller-manager", "kube-controller-manager-serving"),
        "kube-scheduler": ("kube-scheduler", "kube-scheduler-serving"),
    }[binary]
    common += [f"{PKI_DIR}/{name}.{ext}" for name in pairs for ext in ("crt", "key")]
    extra = {
        "kube-apiserver": [ENCRYPTION_CONFIG, SA_KEY, SA_PUB, ETCD_CA_PATH],
        "kube-controller-manager": [f"{K8S_DIR}/controller-manager.kubeconfig", SA_KEY],
        "kube-scheduler": [f"{K8S_DIR}/scheduler.kubeconfig", SCHEDULER_CONFIG],
    }[binary]
    return common + extra
