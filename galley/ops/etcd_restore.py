"""`galley etcd restore INVENTORY SNAPSHOT [--yes]`: the whole cluster back to a snapshot.

Refused before anything stops: a snapshot whose ``.sha256`` file (if one is beside it) does
not match, or that ``etcdutl snapshot status`` cannot read (run here when ``etcdutl`` is on
the operator's PATH, else on the first member), an unreachable host, no confirmation, the
cluster lock held elsewhere. Then, step by step (`restore_plan`), each recorded in the journal
(``<galley_config_dir>/<cluster>/etcd-restore.json``) so running the same command again
finishes a run that stopped:

1. stop every kube-apiserver, then etcd on every member, each unit on all its hosts at once
   (a unit that takes more than `STOP_GRACE` seconds is killed: its data is being replaced);
2. copy the snapshot to every member (checked against its sha256);
3. on each member ``etcdutl snapshot restore`` into a fresh dir with a new cluster token, the
   old data dir renamed aside (never deleted), the restored one put in its place (owned by
   etcd), bootstrap.env set to ``existing`` (a restored dir has member data);
4. start etcd everywhere, wait until every member is healthy at a revision at least the
   snapshot's;
5. record this cluster's identity in etcd (`galley.etcd.identity`);
6. start the apiservers, then restart the controller managers, schedulers and kubelets, and
   wait until each has run for `SETTLED` seconds.

A snapshot is refused, before anything stops, when it is truncated or corrupt (its content
does not match the sha256 etcdctl appended when saving it) or carries another cluster's
identity or none (``--other-cluster`` restores it anyway).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pyinfra.api import Inventory

from galley.components import running_on
from galley.components.etcd import member_hosts
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.components.kube_controller_manager import KUBE_CONTROLLER_MANAGER
from galley.components.kube_scheduler import KUBE_SCHEDULER
from galley.components.kubelet import KUBELET
from galley.etcd import identity as cluster_identity
from galley.etcd.client import EtcdClient, EtcdctlError
from galley.etcd.group import member_name, wanted
from galley.etcd.identity import SECRET as CLUSTER_IDENTITY
from galley.etcd.layout import DATA_DIR
from galley.etcd.plan import Wanted
from galley.etcd.snapshot import (
    TIME_FORMAT,
    SnapshotError,
    SnapshotFile,
    SnapshotHosts,
    SnapshotStatus,
    read_snapshot_file,
    remote_sha256,
    sidecar,
)
from galley.host.restarts import RestartError
from galley.journal import Journal, JournalError, operator_dir
from galley.lock import LockError, hold, lock_paths
from galley.ops.confirm import confirmed
from galley.ops.etcd_snapshot import PyinfraHosts
from galley.text import clean
from galley.vault import kv
from galley.vault.client import VaultError, VaultSettings, connect

JOURNAL = "etcd-restore.json"
HOST_RESTORE_DIR = "/var/lib/galley/etcd-restore"  # the copies and the per-member markers
POLL = 1.0


class RestoreError(Exception):
    """The restore cannot start (nothing was changed), or stopped; one line."""


@dataclass(frozen=True)
class Step:
    """One step of a restore: ``action`` on ``host`` (``unit`` for stop, start, restart)."""

    action: str  # stop | copy | restore | start etcd | check | start | restart
    host: str = ""
    unit: str = ""

    @property
    def key(self) -> str:
        """How the journal records it."""
        words = (self.action, self.unit, self.host and f"on {self.host}")
        return " ".join(word for word in words if word)

    def describe(self) -> str:
        """What it does, in a few words."""
        if self.action == "check":
            return "wait until every member is healthy at the snapshot's revision or later"
        if self.action == "identity":
            return "record this cluster's identity in the restored etcd"
        if self.action == "settle":
            return f"wait until every restarted unit has run for {SETTLED}s without a restart"
        if self.action == "copy":
            return f"copy the snapshot to {self.host}"
        if self.action == "restore":
            return f"restore the snapshot into a fresh data dir on {self.host}, old one aside"
        return self.key


def restore_plan(
    members: Sequence[str],
    apiservers: Sequence[str],
    apiserver_unit: str,
    restarts: Mapping[str, Sequence[str]],
) -> list[Step]:
    """Every step of a restore, in order: ``members`` are the etcd hosts, ``apiservers`` the
    hosts running ``apiserver_unit``, ``restarts`` the units to restart last, per host."""
    steps = [Step("stop", host, apiserver_unit) for host in apiservers]
    steps += [Step("stop", host, "etcd") for host in members]
    steps += [Step("copy", host) for host in members]
    steps += [Step("restore", host) for host in members]
    steps += [Step("start etcd", host) for host in members]
    steps += [Step("check"), Step("identity")]
    steps += [Step("start", host, apiserver_unit) for host in apiservers]
    steps += [Step("restart", host, unit) for host, units in restarts.items() for unit in units]
    if restarts:
        steps.append(Step("settle"))
    return steps


def batches(steps: Sequence[Step]) -> Iterator[list[Step]]:
    """``steps`` in runs done together: the stops of one unit on all its hosts at once (the
    whole cluster is going down: stopping them one by one only adds their grace periods up),
    every other step alone."""
    batch: list[Step] = []
    for step in steps:
        if batch and not (step.action == batch[0].action == "stop" and step.unit == batch[0].unit):
            yield batch
            batch = []
        batch.append(step)
    if batch:
        yield batch


def restore_command(
    snapshot: str,
    member: Wanted,
    initial_cluster: str,
    token: str,
    data_dir: str,
    etcdutl: str,
    owner: str | None,
) -> str:
    """The member's restore, as one shell script that a rerun finishes: ``etcdutl snapshot
    restore`` into ``<data_dir>.galley-restore``, the old data dir renamed
    ``<data_dir>.before-restore-<token>`` (never deleted), the fresh one moved in place and
    given to ``owner``. Markers beside the snapshot copy record each part done."""
    q = shlex.quote
    fresh, aside = q(f"{data_dir}.galley-restore"), q(f"{data_dir}.before-restore-{token}")
    marker = f"{snapshot}.{token}.{member.name}"
    data, moved, done = q(data_dir), q(f"{marker}.moved"), q(f"{marker}.done")
    restore = " ".join(
        q(word)
        for word in (
            etcdutl,
            "snapshot",
            "restore",
            snapshot,
            f"--name={member.name}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-token={token}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--data-dir={data_dir}.galley-restore",
        )
    )
    chown = f"chown -R {q(owner)} {data} && " if owner else ""
    return (
        "set -e; "
        f"if [ -e {done} ]; then exit 0; fi; "
        f"if [ ! -e {moved} ]; then rm -rf {fresh}; {restore} >/dev/null; "
        f"if [ -e {data} ]; then mv -T {data} {aside}; fi; touch {moved}; fi; "
        f"if [ -e {fresh} ]; then mv -T {fresh} {data}; fi; "
        f"{chown}chmod 700 {data} && touch {done}"
    )


# How long each restarted unit must have run for the restore to count it as back.
SETTLED = 10
# How long a unit may take to stop before a restore kills it: a kube-apiserver whose etcd is
# gone waits out its requests' 60 s timeout on SIGTERM, and its data is being replaced anyway.
STOP_GRACE = 10


def stop_command(unit: str) -> str:
    """Stop ``unit``, killing it when it has not stopped within `STOP_GRACE` seconds."""
    q = shlex.quote(unit)
    running = f"systemctl show -p ActiveState --value {q} | grep -qxE 'active|deactivating'"
    return (
        f"systemctl stop --no-block {q} && "
        f"for i in $(seq {STOP_GRACE * 5}); do {running} || break; sleep 0.2; done; "
        f"if {running}; then systemctl kill --signal=SIGKILL {q}; fi; systemctl stop {q}"
    )


class RestoreHosts(SnapshotHosts, Protocol):
    """What a restore does on the hosts, by name (etcd members by member name)."""

    def systemctl(self, name: str, action: str, unit: str) -> None:
        """``systemctl <action> <unit>`` on the host (RestoreError if it fails)."""
        ...

    def start_member(self, name: str, initial_cluster: str) -> None:
        """Write the member's bootstrap.env with ``existing`` and ``initial_cluster``, start
        etcd without waiting (every member must start before any is ready)."""
        ...

    def running_for(self, name: str, unit: str) -> float | None:
        """How long ``unit`` has been active, in seconds (None when it is not active)."""
        ...


@dataclass(frozen=True)
class Layout:
    """Where things are on the members: data dir, the snapshot copies, etcdutl, the owner."""

    data_dir: Callable[[str], str]  # member name -> its data dir
    work_dir: str = HOST_RESTORE_DIR
    etcdutl: str = "/usr/local/bin/etcdutl"
    owner: str | None = "etcd:etcd"


@dataclass
class Restore:
    """Restores ``members`` from ``snapshot``: hosts through ``hosts``, etcd through
    ``client`` (on a member), each step recorded in ``journal``."""

    hosts: RestoreHosts
    client: EtcdClient
    members: Sequence[Wanted]
    steps: Sequence[Step]
    snapshot: Path
    digest: str
    status: SnapshotStatus
    journal: Journal
    layout: Layout
    identity: str  # this cluster's (`galley.etcd.identity`)
    timeout: float = 120.0
    clock: Callable[[], float] = time.monotonic
    out: Callable[[str], None] = print
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def remote(self) -> str:
        """Where the snapshot's copy goes on each member."""
        return f"{self.layout.work_dir}/{self.digest}.db"

    @property
    def token(self) -> str:
        """The restored cluster's new token, the same for every member and every rerun."""
        return str(self.journal.data["token"])

    def say(self, line: str) -> None:
        """A progress line with the time since the run started."""
        self.out(clean(f"[{self.clock() - self.started:7.1f}s] {line}"))

    def run(self) -> None:
        """Every step not done yet (RestoreError when one fails)."""
        done = list(self.journal.data.get("done", []))
        if done:
            self.say(f"resuming: {len(done)} of {len(self.steps)} steps done already")
        for batch in batches(self.steps):
            todo = [step for step in batch if step.key not in done]
            for step in todo:
                self.say(step.describe())
            with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:
                runs = [(step, pool.submit(self._do, step)) for step in todo]
            failures = [run.exception() for _, run in runs if run.exception()]
            done += [step.key for step, run in runs if not run.exception()]
            self.journal.update(done=done)
            if failures:
                raise failures[0]
        self.journal.update(status="finished")

    def _do(self, step: Step) -> None:
        by_name = {w.name: w for w in self.members}
        initial = ",".join(f"{w.name}={w.peer_url}" for w in self.members)
        if step.action in ("stop", "start", "restart"):
            self.hosts.systemctl(step.host, step.action, step.unit)
        elif step.action == "copy":
            copy_snapshot(self.hosts, step.host, self.snapshot, self.digest, self.remote)
        elif step.action == "restore":
            command = restore_command(
                self.remote,
                by_name[step.host],
                initial,
                self.token,
                self.layout.data_dir(step.host),
                self.layout.etcdutl,
                self.layout.owner,
            )
            ok, _, err = self.hosts.run(step.host, command)
            if not ok:
                raise RestoreError(f"{step.host}: restore failed: {clean(err)[-400:]}")
        elif step.action == "start etcd":
            self.hosts.start_member(step.host, initial)
        elif step.action == "identity":
            endpoints = [w.client_url for w in self.members]
            self.client.put(endpoints, cluster_identity.KEY, cluster_identity.marker(self.identity))
        elif step.action == "settle":
            self._settle()
        else:
            self._check()

    def _settle(self) -> None:
        """Until ``timeout``: every restarted unit active for `SETTLED` seconds. A controller
        manager or scheduler that held a leader lease finds it rolled back by the restore and
        exits once; systemd starts it again, and a deploy right after must find it running."""
        units = [(step.host, step.unit) for step in self.steps if step.action == "restart"]
        deadline = self.clock() + self.timeout
        while True:
            unsettled = [
                f"{unit} on {host}"
                for host, unit in units
                if (self.hosts.running_for(host, unit) or 0) < SETTLED
            ]
            if not unsettled:
                return
            if self.clock() > deadline:
                raise RestoreError(
                    f"not running steadily {self.timeout:.0f}s after the restore: "
                    f"{', '.join(unsettled)}"
                )
            time.sleep(POLL)

    def _check(self) -> None:
        """Until ``timeout``: every member healthy, each at the snapshot's revision or later."""
        endpoints = [w.client_url for w in self.members]
        deadline = self.clock() + self.timeout
        problem = "not checked"
        while self.clock() < deadline:
            try:
                problem = self._problem(endpoints)
            except EtcdctlError as exc:
                problem = str(exc)
            if problem is None:
                self.say(f"every member is healthy at revision {self.status.revision} or later")
                return
            time.sleep(POLL)
        raise RestoreError(f"etcd not healthy {self.timeout:.0f}s after the restore: {problem}")

    def _problem(self, endpoints: Sequence[str]) -> str | None:
        members = self.client.members(endpoints)
        health = self.client.health(members)
        sick = [f"{m.name or m.id} ({why})" for m in members if (why := health[m.id])]
        if sick or len(members) != len(self.members):
            return f"{len(members)} members, unhealthy: {', '.join(sick) or 'none'}"
        revisions = self.client.revisions(endpoints)
        behind = {e: r for e, r in revisions.items() if r < self.status.revision}
        if behind or len(revisions) != len(endpoints):
            return f"revisions {revisions}, the snapshot's is {self.status.revision}"
        return None


def copy_snapshot(hosts: SnapshotHosts, name: str, local: Path, digest: str, remote: str) -> None:
    """Put ``local`` at ``remote`` on host ``name`` unless it is there already; RestoreError
    when the copy on the host does not have the sha256 ``digest``."""
    if remote_sha256(hosts, name, remote) == digest:
        return
    hosts.put(name, local, remote)
    if remote_sha256(hosts, name, remote) != digest:
        raise RestoreError(f"the copy of the snapshot on {name} ({remote}) differs from {local}")


def check_snapshot(
    path: Path, check_on_member: Callable[[str], SnapshotStatus], etcdutl: str | None
) -> tuple[SnapshotFile, SnapshotStatus]:
    """What the snapshot file holds and its status, or RestoreError naming what is wrong: its
    ``.sha256`` file (when there is one) must match, its content the sha256 etcdctl appended
    when it saved it, and ``etcdutl snapshot status`` must read it: here with ``etcdutl``
    (when the operator has it), else through ``check_on_member(sha256)``."""
    if not path.is_file():
        raise RestoreError(f"no snapshot file {path}")
    found = read_snapshot_file(path)
    recorded = sidecar(path)
    if recorded.exists():
        words = recorded.read_text().split()
        if not words or words[0].lower() != found.sha256:
            raise RestoreError(
                f"{path} does not match {recorded}: its sha256 is {found.sha256}, the file "
                f"says {words[0] if words else 'nothing'}"
            )
    if found.intact is None:
        raise RestoreError(
            f"{path} is not a whole etcd snapshot: it lacks the sha256 etcdctl appends when it "
            "saves one (truncated, or a copy of a data dir's db)"
        )
    if not found.intact:
        raise RestoreError(
            f"{path} is corrupt: its content does not match the sha256 etcd appended when it "
            "saved it"
        )
    if etcdutl is None:
        return found, check_on_member(found.sha256)
    done = subprocess.run(
        [etcdutl, "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RestoreError(unreadable(path, done.stderr))
    try:
        return found, SnapshotStatus.from_json(json.loads(done.stdout))
    except (ValueError, SnapshotError) as exc:
        raise RestoreError(f"{path}: {exc}") from None


def unreadable(path: Path, stderr: str) -> str:
    """One line for a snapshot ``etcdutl snapshot status`` cannot read: its first line of
    output (an error, or the panic a truncated bbolt file causes), without the stack."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    first = lines[0].removeprefix("Error: ") if lines else "no output"
    return f"{path} is not a readable etcd snapshot (corrupt or truncated): etcdutl: {first}"


def identity_problem(found: SnapshotFile, identity: str) -> str | None:
    """Why the snapshot may not be of this cluster (whose identity is ``identity``), or None
    when it carries exactly this cluster's identity."""
    if found.identities == {identity}:
        return None
    if not found.identities:
        return (
            "the snapshot carries no galley cluster identity (taken before galley recorded one, "
            "or of an etcd galley did not deploy)"
        )
    return (
        f"the snapshot is of another cluster (identity {', '.join(sorted(found.identities))}; "
        f"this cluster's is {identity})"
    )


def new_journal(path: Path, digest: str, cluster: str) -> Journal:
    """The restore's journal: the unfinished one of this snapshot is continued (keeping its
    new cluster token), one of another snapshot refuses the run."""
    try:
        journal = Journal.continue_or_start(path, digest, what="etcd restore")
    except JournalError as exc:
        raise RestoreError(str(exc)) from None
    if "token" not in journal.data:
        stamp = datetime.now(UTC).strftime(TIME_FORMAT).lower()
        journal.update(token=f"{cluster}-etcd-restore-{stamp}")
    return journal


class PyinfraRestoreHosts(PyinfraHosts):
    """`RestoreHosts` over pyinfra hosts (etcd members by member name)."""

    def systemctl(self, name: str, action: str, unit: str) -> None:
        command = f"systemctl {action} {shlex.quote(unit)}"
        if action == "stop":
            command = stop_command(unit)
        ok, _, err = self.run(name, command)
        if not ok:
            raise RestoreError(f"{name}: systemctl {action} {unit} failed: {clean(err)}")

    def running_for(self, name: str, unit: str) -> float | None:
        q = shlex.quote(unit)
        ok, out, _ = self.run(
            name,
            f"systemctl is-active -q {q} && cut -d' ' -f1 /proc/uptime && "
            f"systemctl show -p ActiveEnterTimestampMonotonic --value {q}",
        )
        lines = out.split()
        if not ok or len(lines) != 2:
            return None
        return float(lines[0]) - int(lines[1]) / 1e6

    def start_member(self, name: str, initial_cluster: str) -> None:
        try:
            member_hosts([self.hosts[name]]).start_member(name, initial_cluster)
        except RestartError as exc:
            raise RestoreError(str(exc)) from None


def _member_check(
    hosts: PyinfraRestoreHosts, name: str, local: Path, work_dir: str
) -> Callable[[str], SnapshotStatus]:
    """``etcdutl snapshot status`` of ``local`` on member ``name`` (copied there first)."""

    def check(digest: str) -> SnapshotStatus:
        remote = f"{work_dir}/{digest}.db"
        copy_snapshot(hosts, name, local, digest, remote)
        client = hosts.client_on(name)
        ok, out, err = client.run(
            " ".join(map(shlex.quote, [client.etcdutl, "snapshot", "status", remote, "-w", "json"]))
        )
        if not ok:
            raise RestoreError(f"{unreadable(local, err)} (on {name})")
        try:
            return SnapshotStatus.from_json(json.loads(out))
        except (ValueError, SnapshotError) as exc:
            raise RestoreError(f"{local}: {exc}") from None

    return check


def restore_cli(
    inventory: Inventory, snapshot: str, yes: bool = False, other_cluster: bool = False
) -> int:
    """`galley etcd restore`: 0 restored, 1 stopped (run it again to finish), 2 refused before
    any change. A snapshot not of this cluster is refused unless ``other_cluster``."""
    etcd_hosts = list(inventory.get_group("etcd", []))
    if not etcd_hosts:
        print("galley: etcd restore: the inventory has no etcd group", file=sys.stderr)
        return 2
    data = etcd_hosts[0].data
    members = [wanted(h) for h in etcd_hosts]
    apiservers = [h.name for h in inventory if KUBE_APISERVER.runs_on(h)]
    restarted = (KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBELET)
    restarts = {
        h.name: units
        for h in inventory
        if (units := [c.unit.name for c in running_on(h) if c in restarted and c.unit])
    }
    others = {h.name: h for h in inventory if h.name in apiservers or h.name in restarts}
    chosen = {member_name(h): h for h in etcd_hosts} | others
    logging.getLogger("pyinfra").addHandler(logging.StreamHandler(sys.stderr))
    hosts = PyinfraRestoreHosts(inventory, chosen)
    try:
        return _restore(
            hosts, data, members, apiservers, restarts, Path(snapshot), yes, other_cluster
        )
    finally:
        hosts.close()


def _restore(
    hosts: PyinfraRestoreHosts,
    data: Any,
    members: Sequence[Wanted],
    apiservers: Sequence[str],
    restarts: Mapping[str, Sequence[str]],
    path: Path,
    yes: bool,
    other_cluster: bool,
) -> int:
    """The checks, the confirmation, the lock, then the restore (`restore_cli`'s codes)."""
    path = path.expanduser()
    cluster = data.cluster_name
    try:
        hosts.connect()
        etcdutl = shutil.which("etcdutl")
        check = _member_check(hosts, members[0].name, path, HOST_RESTORE_DIR)
        found, status = check_snapshot(path, check, etcdutl)
        digest = found.sha256
        identity_path = kv.read_path(cluster, CLUSTER_IDENTITY)
        vault = connect(
            VaultSettings.from_data(data), lock_paths(cluster) | {identity_path: "read"}
        )
        identity = kv.read(vault, cluster, CLUSTER_IDENTITY)["id"]
        problem = identity_problem(found, identity)
        if problem and not other_cluster:
            raise RestoreError(f"{path}: {problem}: pass --other-cluster to restore it anyway")
        where = etcdutl or f"etcdutl on {members[0].name}"
        unit = KUBE_APISERVER.unit.name if KUBE_APISERVER.unit else KUBE_APISERVER.name
        steps = restore_plan([w.name for w in members], apiservers, unit, restarts)
        plan = [
            f"restore etcd of cluster {cluster} from {path}:",
            f"  sha256 {digest}, {status.describe()} (checked with {where})",
            f"  {problem} (--other-cluster)" if problem else f"  cluster identity {identity}",
            *(f"  {step.describe()}" for step in steps),
        ]
        if not confirmed(plan, yes, "etcd restore", "stop the cluster and restore it?"):
            return 2
        hold(vault, data)
        journal = new_journal(operator_dir(data) / JOURNAL, digest, cluster)
    except (RestoreError, SnapshotError, VaultError, LockError) as exc:
        print(f"galley: etcd restore: {clean(str(exc))} (nothing was changed)", file=sys.stderr)
        return 2
    restore = Restore(
        hosts,
        hosts.client_on(members[0].name),
        members,
        steps,
        path,
        digest,
        status,
        journal,
        Layout(data_dir=lambda name: DATA_DIR),
        identity,
        out=_print,
    )
    try:
        restore.run()
    except (RestoreError, SnapshotError) as exc:
        journal.update(status="failed", error=clean(str(exc)))
        print(
            f"galley: etcd restore: {clean(str(exc))}; run it again to finish ({journal.path})",
            file=sys.stderr,
        )
        return 1
    print(
        f"etcd of {data.cluster_name} restored from {path.name} (revision {status.revision}); "
        f"old data dirs kept as {DATA_DIR}.before-restore-{restore.token}"
    )
    return 0


def _print(line: str) -> None:
    print(line, flush=True)
