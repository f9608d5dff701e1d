"""The component registry: every component galley runs, declared once in its own room.

Phases run in this order in a whole-cluster deploy; within a phase, components in this order.
`EVERY_HOST` components run on every host a run deploys: `EVERY_HOST_FIRST` before its first
phase (on every host of the run before any phase starts), `EVERY_HOST_LAST` with its last.
A new component is one more module here and one more entry below: the deploys, validation,
the fleet report, the Vault roles, secrets and policies, the cluster's RBAC and the lab's
mirror all read `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory

from galley.components.api_proxy import API_PROXY
from galley.components.containerd import CONTAINERD
from galley.components.etcd import ETCD
from galley.components.flannel_cni import FLANNEL_CNI
from galley.components.flanneld import FLANNELD, flannel_network
from galley.components.host_firewall import host_firewall
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.components.kube_controller_manager import KUBE_CONTROLLER_MANAGER
from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kube_scheduler import KUBE_SCHEDULER
from galley.components.kubelet import KUBELET
from galley.components.model import Artifact, Cert, Component, Phase, Port
from galley.components.monitoring import ALERTMANAGER, ScrapeJob, prometheus, scrape_jobs
from galley.components.node_exporter import node_exporter
from galley.components.renewal import cert_renewal, plan
from galley.etcd.access import EtcdUser
from galley.host.etcd_access import keep_access
from galley.vault.kv import KvSecret
from galley.vault.pki import Identity, RoleSpec
from galley.vault.renewal import HostRenewal


def scrape_jobs_of(host: Host) -> list[ScrapeJob]:
    """What Prometheus on ``host`` scrapes: every job the registry declares metrics for, on
    the hosts of ``host``'s inventory that run it (`galley.components.monitoring`)."""
    return scrape_jobs(host.inventory, REGISTRY, running_on)


def etcd_users(inventory: Inventory) -> list[EtcdUser]:
    """The etcd users the certificates on ``inventory``'s hosts declare, once each."""
    return list(
        {
            cert.etcd_user.name: cert.etcd_user
            for target in inventory
            for component in running_on(target)
            for cert in component.certs_of(target)
            if cert.etcd_user is not None
        }.values()
    )


PROMETHEUS = prometheus(scrape_jobs_of)
PHASES: tuple[Phase, ...] = (
    # Monitoring first: it watches the rest come up (and a deploy that stops half-way).
    Phase("monitoring", (PROMETHEUS, ALERTMANAGER)),
    # Once its members run: etcd's users and roles, then its authorisation on.
    Phase("etcd", (ETCD,), finish=partial(keep_access, etcd_users)),
    Phase("control plane", (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)),
    # Workers reach the API (through api-proxy) before flanneld, their first API client, starts.
    Phase("flannel", (API_PROXY, FLANNELD, FLANNEL_CNI), prepare=flannel_network),
    Phase("workers", (CONTAINERD, KUBELET, KUBE_PROXY)),
)


def renewal_plan(host: Host, components: Iterable[Component] | None = None) -> HostRenewal:
    """``host``'s certificates in Vault (`galley.components.renewal.plan`): of the components
    it runs, or of those of ``components`` it runs."""
    chosen = running_on(host) if components is None else components
    return plan(host, [c for c in chosen if c.runs_on(host)])


def opened_on(host: Host) -> list[tuple[str, Port]]:
    """The ports the components ``host`` runs open there (their metrics' to the monitoring
    hosts), each with its component's name."""
    return [
        (c.name, port)
        for c in running_on(host)
        for port in (*c.ports, *(metrics.opened() for metrics in c.metrics))
        if port.when(host)
    ]


CERT_RENEWAL = cert_renewal(renewal_plan)
HOST_FIREWALL = host_firewall(opened_on)
NODE_EXPORTER = node_exporter(lambda host: running_on(host))
# What every host runs: the firewall before its phases (a new peer or node must find its
# ports open on the others), its metrics and certificate renewal with its last phase.
EVERY_HOST_FIRST: tuple[Component, ...] = (HOST_FIREWALL,)
EVERY_HOST_LAST: tuple[Component, ...] = (NODE_EXPORTER, CERT_RENEWAL)
EVERY_HOST: tuple[Component, ...] = (*EVERY_HOST_FIRST, *EVERY_HOST_LAST)
REGISTRY: tuple[Component, ...] = (
    *(c for phase in PHASES for c in phase.components),
    *EVERY_HOST,
)


def phase(name: str) -> Phase:
    """The phase called ``name`` (``control_plane`` is accepted for ``control plane``)."""
    for candidate in PHASES:
        if candidate.name == name.replace("_", " "):
            return candidate
    known = ", ".join(p.name for p in PHASES)
    raise ValueError(f"unknown phase {name!r}; known: {known}")


def select(names: Iterable[str]) -> list[Component]:
    """Components by component name or phase name, in registry order, without repeats."""
    registry = REGISTRY
    wanted: set[str] = set()
    unknown = []
    for name in names:
        matches = [
            c.name for c in registry if c.name == name or c.phase == name.replace("_", " ") != ""
        ]
        if not matches:
            unknown.append(name)
        wanted.update(matches)
    if unknown:
        phases = {c.phase.replace(" ", "_") for c in registry if c.phase}
        known = sorted({c.name for c in registry} | phases)
        raise ValueError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in registry if c.name in wanted]


def running_on(host: Host) -> list[Component]:
    """The components ``host`` runs."""
    return [c for c in REGISTRY if c.runs_on(host)]


def named(names: Iterable[str]) -> list[Component]:
    """The components called ``names``, in registry order (unknown names are skipped)."""
    wanted = set(names)
    return [c for c in REGISTRY if c.name in wanted]


def artifacts() -> list[Artifact]:
    """Every artifact of the registry, once each, in registry order."""
    return list({a.key: a for c in REGISTRY for a in c.artifacts}.values())


def vault_roles(components: Iterable[Component] | None = None) -> list[RoleSpec]:
    """The Vault roles that sign the certificates of ``components`` (default: all), once each."""
    chosen = REGISTRY if components is None else components
    return list({cert.role.name: cert.role for c in chosen for cert in c.certs}.values())


def kv_secrets(components: Iterable[Component] | None = None) -> list[KvSecret]:
    """The KV values ``components`` (default: all) read, once each."""
    chosen = REGISTRY if components is None else components
    return list({secret.name: secret for c in chosen for secret in c.secrets}.values())


def rbac_objects(components: Iterable[Component] | None = None) -> list[Mapping[str, Any]]:
    """The cluster RBAC objects ``components`` (default: all) declare, once each, ClusterRoles
    before the bindings that name them."""
    chosen = REGISTRY if components is None else components
    found = {(o["kind"], o["metadata"]["name"]): o for c in chosen for o in c.rbac}
    return sorted(found.values(), key=lambda o: o["kind"] != "ClusterRole")


def certificates_of(host: Host) -> list[tuple[Cert, Identity]]:
    """The identity table of ``host``: every certificate galley keeps on it, with the names it
    carries (what the deploy installs and what the tests hold the hosts against)."""
    found = {
        cert.cert_path: (cert, cert.identity(host))
        for component in running_on(host)
        for cert in component.certs_of(host)
    }
    return list(found.values())
