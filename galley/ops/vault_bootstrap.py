"""`galley vault bootstrap`: what the registry's components need of Vault, written by
`galley.vault.setup`, for the hosts of an inventory. Each certificate on a host gets a role of
its own (`galley.vault.renewal`); one ACL policy per deploy job grants exactly the roles of
the hosts that job deploys (the hosts of its groups), with the KV values and CAs its phases'
components read; ``<cluster>-deploy`` combines them and ``<cluster>-operator`` is for day-2
operations. No job's token can sign a certificate that names another job's host, or have a
host identity made for one and log in as it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import hvac
from pyinfra.api import Inventory
from pyinfra.api.host import Host

import galley.components as registry
from galley.components.model import Component
from galley.etcd.identity import SECRET as CLUSTER_IDENTITY
from galley.lock import break_paths, lock_paths
from galley.ops.admin import BREAK_GLASS, operator_paths
from galley.ops.revocation import revocation_paths
from galley.vault import kv
from galley.vault.pki import ADMIN_ROLE, BREAK_GLASS_ROLE, MOUNTS, mount_path
from galley.vault.setup import PkiOptions, Plan, Policy
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
    """Bootstrap options from an inventory: each host's own certificates."""
    return PkiOptions(renewal_hosts=tuple(registry.renewal_plan(host) for host in inventory))


def deploy_grants(
    cluster: str, hosts: Iterable[Host], components: Iterable[Component] | None = None
) -> Policy:
    """What deploying ``components`` (default: all) and the components every host runs on
    ``hosts`` needs of Vault (for the policies and `galley.vault.client.connect`): on each host
    running one of ``components``, its certificates' own roles (signed with exactly their
    parameters, read to check they are current), and the mounts' CAs, the KV values the
    components declare and the cluster lock."""
    chosen = registry.REGISTRY if components is None else components
    chosen = list({c.name: c for c in [*chosen, *registry.EVERY_HOST]}.values())
    paths: dict[str, str] = {}
    for mount in MOUNTS:
        paths[f"{mount_path(cluster, mount.name)}/ca/pem"] = "read"
        paths[f"{mount_path(cluster, mount.name)}/cert/ca"] = "read"
    for secret in registry.kv_secrets(chosen):
        paths[kv.read_path(cluster, secret)] = "read"
    signs = {}
    for host in hosts:
        running = [c for c in chosen if c.runs_on(host)]
        if all(c in registry.EVERY_HOST for c in running):
            continue  # not deployed by these components
        for cert in registry.renewal_plan(host, running).certs:
            signs[cert.sign_path] = cert.sign_parameters()
            paths[cert.role_path] = "read"
    return Policy(paths | lock_paths(cluster), signs)


def policies(cluster: str, hosts: Sequence[Host]) -> dict[str, Policy]:
    """Every ACL policy the bootstrap writes by name: one per job (``<cluster>-etcd``,
    ``-control-plane``, ``-workers``, ``-monitoring``) for its hosts among ``hosts``,
    ``<cluster>-deploy`` combining them for one-token convenience, ``<cluster>-operator``
    (the admin credential, which no deploy policy grants, and revoking a leaving host's
    certificates: `galley node remove`), ``<cluster>-break-glass`` (system:masters, held
    apart: `galley admin credentials --break-glass`) and ``<cluster>-lock-break`` (breaking
    another run's lock: `galley lock break`).
    Token lookup and capabilities-self come with Vault's ``default``."""
    jobs = {
        f"{cluster}-{job}": deploy_grants(
            cluster, hosts, [c for name in phases for c in registry.phase(name).components]
        )
        for job, phases in JOBS.items()
    }
    combined = Policy(
        {path: cap for job in jobs.values() for path, cap in job.paths.items()},
        {path: pinned for job in jobs.values() for path, pinned in job.signs.items()},
    )
    # `galley etcd restore` checks which cluster a snapshot is of.
    identity = {kv.read_path(cluster, CLUSTER_IDENTITY): "read"}
    operator = operator_paths(cluster) | revocation_paths(cluster) | lock_paths(cluster) | identity
    return {
        **jobs,
        f"{cluster}-deploy": combined,
        f"{cluster}-operator": Policy(operator),
        f"{cluster}-break-glass": Policy(operator_paths(cluster, BREAK_GLASS)),
        f"{cluster}-lock-break": Policy(break_paths(cluster)),
    }


def plan(cluster: str, hosts: Sequence[Host] = ()) -> Plan:
    """What ``cluster`` with ``hosts`` needs in Vault for every component of the registry.
    The components' own roles were once shared by all hosts: now each host has its own, and
    a shared one left from before is deleted."""
    return Plan(
        roles=(ADMIN_ROLE, BREAK_GLASS_ROLE),
        secrets=tuple(registry.kv_secrets()),
        policies=policies(cluster, hosts),
        retired_roles=tuple(registry.vault_roles()),
    )


def bootstrap(client: hvac.Client, cluster: str, inventory: Inventory | None = None) -> list[str]:
    """Write `plan` for ``cluster`` and the hosts of ``inventory`` (none: a cluster with no
    hosts yet) (`galley.vault.setup.bootstrap`): one line per change."""
    hosts = list(inventory or ())
    options = options_from(inventory) if inventory is not None else PkiOptions()
    return apply(client, cluster, plan(cluster, hosts), options)
