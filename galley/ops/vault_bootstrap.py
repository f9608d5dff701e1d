"""`galley vault bootstrap`: what the registry's components need of Vault, written by
`galley.vault.setup`. One Vault role per kind of certificate the components declare
(`galley.components.vault_roles`) and the admin's; the KV values they declare; one ACL policy
per deploy job (the paths its phases' components use), ``<cluster>-deploy`` combining them
and ``<cluster>-operator`` for day-2 operations; given an inventory, each host's renewal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import hvac
from pyinfra.api import Inventory

import galley.components as registry
from galley.components.kubernetes import is_ip
from galley.components.model import Component
from galley.etcd.identity import SECRET as CLUSTER_IDENTITY
from galley.lock import lock_paths
from galley.ops.admin import operator_paths
from galley.ops.revocation import revocation_paths
from galley.vault import kv
from galley.vault.pki import ADMIN_ROLE, MOUNTS, mount_path
from galley.vault.setup import PkiOptions, Plan
from galley.vault.setup import bootstrap as apply

# One policy per job: the phases whose hosts a token of that job deploys (each deploys the
# components every host runs too).
JOBS: Mapping[str, tuple[str, ...]] = {
    "etcd": ("etcd",),
    "control-plane": ("control plane",),
    "workers": ("flannel", "workers"),
    "monitoring": ("monitoring",),
}


def options_from(inventory: Inventory) -> PkiOptions:
    """Bootstrap options from an inventory's data: its cluster domain, when the API endpoint
    is a name, that name (the apiserver role then allows exactly it), and each host's
    certificate renewal."""
    hosts = list(inventory)
    data = hosts[0].data if hosts else {}
    endpoint = data.get("api_endpoint")
    name = str(endpoint) if endpoint and not is_ip(str(endpoint)) else None
    return PkiOptions(
        cluster_domain=data.get("cluster_domain") or "cluster.local",
        api_endpoint=name,
        renewal_hosts=tuple(registry.renewal_plan(host) for host in hosts),
    )


def deploy_paths(cluster: str, components: Iterable[Component] | None = None) -> dict[str, str]:
    """Each API path deploying ``components`` (default: all) and the components every host
    runs uses, with the capability it needs (for the policies and
    `galley.vault.client.connect`): their roles' sign paths, the mounts' CAs, the KV values
    they declare, and the cluster lock."""
    chosen = registry.REGISTRY if components is None else components
    chosen = list({c.name: c for c in [*chosen, *registry.EVERY_HOST]}.values())
    roles = registry.vault_roles(chosen)
    paths = {f"{mount_path(cluster, r.mount)}/sign/{r.name}": "update" for r in roles}
    for mount in MOUNTS:
        paths[f"{mount_path(cluster, mount.name)}/ca/pem"] = "read"
        paths[f"{mount_path(cluster, mount.name)}/cert/ca"] = "read"
    for secret in registry.kv_secrets(chosen):
        paths[kv.read_path(cluster, secret)] = "read"
    return paths | lock_paths(cluster)


def policies(cluster: str) -> dict[str, dict[str, str]]:
    """Every ACL policy the bootstrap writes, name -> {path: capability}: one per job
    (``<cluster>-etcd``, ``-control-plane``, ``-workers``, ``-monitoring``),
    ``<cluster>-deploy`` combining them for one-token convenience, and ``<cluster>-operator``
    (the admin credential, which no deploy policy grants, and revoking a leaving host's
    certificates: `galley node remove`).
    Token lookup and capabilities-self come with Vault's ``default``."""
    jobs = {
        f"{cluster}-{job}": deploy_paths(
            cluster, [c for name in phases for c in registry.phase(name).components]
        )
        for job, phases in JOBS.items()
    }
    combined = {path: cap for paths in jobs.values() for path, cap in paths.items()}
    # `galley etcd restore` checks which cluster a snapshot is of.
    identity = {kv.read_path(cluster, CLUSTER_IDENTITY): "read"}
    operator = operator_paths(cluster) | revocation_paths(cluster) | lock_paths(cluster) | identity
    return {**jobs, f"{cluster}-deploy": combined, f"{cluster}-operator": operator}


def plan(cluster: str) -> Plan:
    """What ``cluster`` needs in Vault for every component of the registry."""
    return Plan(
        roles=(*registry.vault_roles(), ADMIN_ROLE),
        secrets=tuple(registry.kv_secrets()),
        policies=policies(cluster),
    )


def bootstrap(client: hvac.Client, cluster: str, options: PkiOptions | None = None) -> list[str]:
    """Write `plan` for ``cluster`` (`galley.vault.setup.bootstrap`): one line per change."""
    return apply(client, cluster, plan(cluster), options or PkiOptions())
