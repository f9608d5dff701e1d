"""`galley node remove INVENTORY NAME [--unreachable] [--yes]`: take a worker out of the cluster.

NAME stays in the inventory's ``workers`` group until the command is done: galley reaches a
host only through its inventory entry (address, SSH key, pinned host key), and the
DigitalOcean inventory lists a droplet only while it carries its role tag. So the operator runs
the command, then destroys the droplet or drops its tag (until then the next deploy sets it
up again, and says so). A dead droplet (``--unreachable``) may be listed or already gone: the
host steps are skipped, saying so. etcd and control-plane hosts are refused.

Steps, each recorded in the journal (``<galley_config_dir>/<cluster>/node-remove.json``); a run
killed halfway is finished by running the same command again:

1. refusals, before any change: the role, the admin credential, the API and Vault (the token
   must list, read and revoke certificates), the cluster lock;
2. cordon, then drain with the rollout's PDB-respecting eviction (a drain that times out stops
   naming the blockers, the node left cordoned);
3. on the host: read each certificate's serial, stop and disable galley's worker units (the
   kubelet then cannot register the Node again), remove their keys and certificates;
4. delete the Node;
5. revoke in Vault the serials read on the host and every unexpired certificate naming the
   node (`galley.ops.revocation`); each serial must then be on its mount's CRL.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import hvac
from pyinfra import host
from pyinfra.api import Inventory, deploy
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import files, python, systemd

import galley.components as registry
from galley.components.kubernetes import node_name, operator_api_urls
from galley.components.model import Component
from galley.journal import Journal, JournalError, operator_dir
from galley.lock import LockError, hold, lock_paths
from galley.ops.admin import AdminFiles
from galley.ops.batches import Batches, HostOutcome
from galley.ops.confirm import confirmed
from galley.ops.drain import Evicting, drain
from galley.ops.kubeapi import ApiError, KubeApi
from galley.ops.revocation import (
    Issued,
    delete_login,
    issued,
    issued_to,
    revocation_paths,
    revoke_checked,
)
from galley.text import clean
from galley.vault.client import VaultError, VaultSettings, connect
from galley.vault.pki import mount_path
from galley.vault.renewal import login_path

JOURNAL = "node-remove.json"
GUARDED = {"etcd": "galley etcd remove takes etcd members out", "control_plane": "not supported"}


class RemoveError(Exception):
    """The removal cannot start (nothing was changed), or stopped; one line."""


def refusal(groups: Mapping[str, Collection[str]], name: str, unreachable: bool) -> str | None:
    """Why ``name`` cannot be removed as a worker (``groups``: group -> host names)."""
    for group, instead in GUARDED.items():
        if name in groups.get(group, ()):
            return f"{name} is in the {group} group: node remove takes workers only ({instead})"
    if name not in groups.get("workers", ()) and not unreachable:
        return (
            f"{name} is not in the inventory's workers group: galley reaches a host through its "
            "inventory entry (remove it from the inventory after this command); for a droplet "
            "that is gone, pass --unreachable"
        )
    return None


def worker_components() -> list[Component]:
    """The components a worker runs (those of every host too), in the order their units stop
    (last started first)."""
    return [c for c in reversed(registry.REGISTRY) if c.group in ("workers", None)]


class HostWork(Protocol):
    """The host steps (`PyinfraHostWork`)."""

    def clean(self, name: str, record: Callable[[list[Issued]], None]) -> str | None:
        """Read the serials (``record`` gets them before anything is removed), stop and
        disable the units, remove keys and certificates; the error, None when done."""
        ...


class Api(Evicting, Protocol):
    """What a removal needs of the Kubernetes API (`KubeApi`)."""

    def node(self, name: str) -> dict: ...
    def set_unschedulable(self, name: str, value: bool) -> dict: ...
    def delete_node(self, name: str) -> bool: ...


@dataclass
class Removal:
    """Removes one worker: ``hosts`` None when it is unreachable."""

    api: Api
    hosts: HostWork | None
    vault: hvac.Client
    mounts: list[str]  # the Vault mounts its certificates come from
    journal: Journal
    login: Callable[[str], str | None] = lambda name: None  # a host's renewal login path
    drain_timeout: float = 300.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    out: Callable[[str], None] = print
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def say(self, name: str, step: str) -> None:
        """A progress line: elapsed time, node, step."""
        self.out(clean(f"[{self.clock() - self.started:7.1f}s] {name}: {step}"))

    def run(self, name: str, node: str) -> list[Issued]:
        """Every step not done yet; the certificates revoked. RemoveError when it stops."""
        record = self.journal.node(name)
        if record.get("state") not in ("drained", "host cleaned", "node deleted"):
            self._drain(name, node)
        if record.get("state") not in ("host cleaned", "node deleted"):
            self._clean(name)
        if record.get("state") != "node deleted":
            self.say(name, f"delete Node {node}")
            if not self.api.delete_node(node):
                self.say(name, f"no Node {node} (deleted already)")
            self.journal.update(name, state="node deleted")
        revoked = self._revoke(name, node)
        self.journal.update(name, state="done")
        self.journal.update(status="finished")
        return revoked

    def _drain(self, name: str, node: str) -> None:
        try:
            self.api.node(node)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.say(name, f"no Node {node}: nothing to cordon or drain")
            self.journal.update(name, state="drained")
            return
        self.say(name, "cordon")
        self.api.set_unschedulable(node, True)
        self.journal.update(name, state="cordoned")
        self.say(name, "drain (evictions respect PodDisruptionBudgets)")
        blockers = drain(self.api, node, self.drain_timeout, self.clock, self.sleep)
        if blockers:
            self.journal.update(name, blockers=blockers)
            raise RemoveError(
                f"drain of {node} timed out after {self.drain_timeout:.0f}s, the node is left "
                f"cordoned; still there: {'; '.join(blockers)}"
            )
        self.journal.update(name, state="drained")

    def _clean(self, name: str) -> None:
        if self.hosts is None:
            self.say(name, "unreachable: its units, keys and certificates are left on the host")
            self.journal.update(name, state="host cleaned", host="skipped (unreachable)")
            return
        self.say(name, "read certificate serials, stop and disable units, remove keys")

        def record(found: list[Issued]) -> None:
            known = self.journal.node(name).get("serials", [])  # a rerun finds fewer files
            merged = known + [vars(c) for c in found if vars(c) not in known]
            self.journal.update(name, serials=merged)

        error = self.hosts.clean(name, record)
        if error:
            raise RemoveError(f"{name}: {error}")
        self.journal.update(name, state="host cleaned")

    def _revoke(self, name: str, node: str) -> list[Issued]:
        now = datetime.now(UTC)
        on_host = [Issued(**cert) for cert in self.journal.node(name).get("serials", [])]
        found = [cert for mount in self.mounts for cert in issued_to(self.vault, mount, node, now)]
        certificates = list(dict.fromkeys(on_host + found))
        self.say(name, f"revoke {len(certificates)} certificate(s) in Vault")
        revoke_checked(self.vault, certificates)
        for cert in certificates:
            self.say(name, f"revoked {cert.serial} ({cert.cn}, {cert.mount}): on the CRL")
        self.journal.update(name, revoked=[vars(cert) for cert in certificates])
        login = self.login(name)
        if login:
            delete_login(self.vault, login)
            self.say(name, f"deleted its renewal login {login}")
        return certificates


def _read_serials(
    state: State, host: Host, certs: list[tuple[str, str]], record: Callable[[list[Issued]], None]
) -> None:
    """Read each (mount, certificate path) on the host; ``record`` gets the serials."""
    found = []
    for mount, path in certs:
        ok, output = host.run_shell_command(f"cat {shlex.quote(path)}")
        if ok and output.stdout.strip():
            found.append(issued(mount, output.stdout))
    record(found)


def _finished(state: State, host: Host, outcomes: dict[str, HostOutcome]) -> None:
    outcomes[host.name].healthy = True


@deploy("Remove a worker's units, keys and certificates")
def _clean_host(outcomes: dict[str, HostOutcome], record: Callable[[list[Issued]], None]) -> None:
    components = worker_components()
    certs = list({c.cert_path: c for comp in components for c in comp.certs_of(host)}.values())
    mounted = [(mount_path(host.data.cluster_name, c.mount), c.cert_path) for c in certs]
    python.call(
        name="Read the certificates' serials", function=_read_serials, certs=mounted, record=record
    )
    timers = [timer.timer_unit for c in components for timer in c.timers]
    for unit in host.loop(timers + [c.unit.name for c in components if c.unit]):
        systemd.service(
            name=f"{unit} stopped and disabled", service=unit, running=False, enabled=False
        )
    for path in host.loop([p for c in certs for p in (c.key_path, c.cert_path)]):
        files.file(name=f"{path} removed", path=path, present=False)
    python.call(name="Host steps done", function=_finished, outcomes=outcomes)


class PyinfraHostWork:
    """The host steps on a host of ``inventory`` (`galley.ops.batches`)."""

    def __init__(self, inventory: Inventory) -> None:
        self.batches = Batches(inventory)

    def clean(self, name: str, record: Callable[[list[Issued]], None]) -> str | None:
        return self.batches.run([name], _clean_host, record=record)[name].error


def _prepare(inventory: Inventory, name: str, unreachable: bool) -> tuple:
    """Everything checked before a change (RemoveError if refused)."""
    groups = {g: [h.name for h in inventory.get_group(g, [])] for g in ("etcd", "control_plane")}
    groups["workers"] = [h.name for h in inventory.get_group("workers", [])]
    problem = refusal(groups, name, unreachable)
    if problem:
        raise RemoveError(problem)
    listed = name in groups["workers"]
    data = next(iter(inventory)).data
    node = node_name(inventory.get_host(name)) if listed else name
    files = AdminFiles(operator_dir(data))
    if not files.cert.exists():
        raise RemoveError(f"no admin credential in {files.directory}: galley admin credentials")
    api = KubeApi(operator_api_urls(inventory), files)
    api.nodes()  # the API answers
    vault = connect(
        VaultSettings.from_data(data),
        revocation_paths(data.cluster_name) | lock_paths(data.cluster_name),
    )
    components = worker_components()
    certs = [c for x in components for c in x.certs]
    mounts = sorted({mount_path(data.cluster_name, c.mount) for c in certs})
    journal = Journal.continue_or_start(operator_dir(data) / JOURNAL, name, what="node removal")
    return data, node, listed, api, vault, mounts, journal


def node_remove_cli(
    inventory: Inventory,
    name: str,
    unreachable: bool = False,
    yes: bool = False,
    drain_timeout: float = 300.0,
) -> int:
    """`galley node remove`: 0 done, 1 stopped (run it again to finish), 2 refused before any
    change."""
    try:
        data, node, listed, api, vault, mounts, journal = _prepare(inventory, name, unreachable)
    except (RemoveError, JournalError, ApiError, VaultError) as exc:
        print(f"galley: node remove: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    plan = [
        f"remove worker {name} (Node {node}) from cluster {data.cluster_name}:",
        "  cordon and drain (PodDisruptionBudgets respected), delete the Node",
        "  on the host: stop and disable its units, remove its keys and certificates"
        if not unreachable
        else "  --unreachable: no host steps (its units, keys and certificates stay on it)",
        f"  revoke its certificates in Vault ({', '.join(mounts)}), checked on the CRLs",
    ]
    if not confirmed(plan, yes, "node remove"):
        return 2
    try:
        hold(vault, data)
    except (VaultError, LockError) as exc:
        print(f"galley: node remove: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    logging.getLogger("pyinfra").addHandler(logging.StreamHandler(sys.stderr))
    hosts = None if unreachable else PyinfraHostWork(inventory)
    removal = Removal(
        api,
        hosts,
        vault,
        mounts,
        journal,
        lambda host_name: login_path(data.cluster_name, host_name),
        drain_timeout,
        out=_print,
    )
    try:
        revoked = removal.run(name, node)
    except (RemoveError, ApiError, VaultError) as exc:
        journal.update(status="failed", error=clean(str(exc)))
        print(
            f"galley: node remove: {exc}; run it again to finish ({journal.path})", file=sys.stderr
        )
        return 1
    print(f"{name} removed: Node deleted, {len(revoked)} certificate(s) revoked")
    if listed:
        print(
            f"now destroy the droplet or drop its role tag: while {name} is in the workers "
            "group, the next deploy sets it up again"
        )
    return 0


def _print(line: str) -> None:
    print(line, flush=True)
