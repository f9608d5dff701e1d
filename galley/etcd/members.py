"""Run etcd membership changes: reconcile the members with the inventory, or remove one.

Each step reads the cluster again (`Membership.read`, at execution time), asks
`galley.etcd.plan` for the one next step, takes and checks a snapshot before any change,
runs it through `EtcdClient` (etcdctl) and `MemberHosts` (the member's host: start, stop and
wipe), records it in the journal and logs a line a person can follow. A run killed at any
point is finished by the next run of the same command: the live member list says what is
pending, the journal keeps what etcd answered (the ``initial-cluster`` of ``member add``) and
what only galley knows (a removed member's host not wiped yet).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from galley.etcd.client import EtcdClient, EtcdctlError
from galley.etcd.plan import (
    AddLearner,
    Done,
    Live,
    Member,
    Promote,
    Refuse,
    RemoveMember,
    StartMember,
    Step,
    Wanted,
    plan_reconcile,
    plan_remove,
)
from galley.etcd.snapshot import SnapshotError, save_snapshot
from galley.journal import Journal, JournalError

# etcd's answers that pass with time: a learner catching up, and strict-reconfig-check's
# "every voter connected for 5 s" (also just after a member started or was promoted).
TRANSIENT = (
    "can only promote a learner member which is in sync with leader",
    "etcdserver: unhealthy cluster",
)
T = TypeVar("T")
MEMBERSHIP_SNAPSHOTS_KEPT = 4  # on the host running etcdctl, before membership changes
POLL = 0.2
# The journal states of a removal whose member is (or may be) removed, its host step not done.
HOST_STEP_PENDING = ("removing", "removed")


class MembershipError(Exception):
    """A membership change was refused or failed (one line; refusals change nothing)."""


class MembershipRefused(MembershipError):
    """The planner refused the change: nothing was changed."""


class MemberHosts(Protocol):
    """What membership work does on the members' hosts, by inventory name."""

    def data_dir_empty(self, name: str) -> bool:
        """Whether the host's etcd data dir holds no member data."""
        ...

    def start_member(self, name: str, initial_cluster: str) -> None:
        """Write the member's config with ``initial-cluster-state: existing`` and
        ``initial_cluster`` (as `member add` returned it), then start etcd."""
        ...

    def stop_and_wipe(self, name: str) -> None:
        """Stop (and disable) etcd and empty its data dir; delete its keys."""
        ...


@dataclass
class Membership:
    """Membership work on one cluster: etcd through ``client``, hosts through ``hosts``."""

    client: EtcdClient
    hosts: MemberHosts
    journal_path: Path
    snapshot_dir: str  # where ``client`` runs; snapshots hold every secret (kept 0600)
    log: Callable[[str], None] = print
    timeout: float = 60.0  # for a started member to join, and a learner to catch up
    max_steps: int = 32

    def reconcile(self, wanted: Sequence[Wanted]) -> str:
        """Bring the members in line with ``wanted``, one change at a time; the final note."""
        journal = self._journal("reconcile")
        changed = False
        with _recorded(journal):
            for _ in range(self.max_steps):
                live = self.read(wanted)
                step = plan_reconcile(wanted, live)
                if isinstance(step, Refuse) and changed:
                    live, step = self._settle(wanted, step)
                self.log(f"etcd membership: {step.describe()}")
                if isinstance(step, Done):
                    journal.update(status="finished")
                    return step.note
                if isinstance(step, Refuse):
                    journal.update(status="refused")
                    raise MembershipRefused(step.reason)
                if isinstance(step, AddLearner):
                    self._add(step, live, journal)
                elif isinstance(step, StartMember):
                    self._start(step, live, journal)
                elif isinstance(step, Promote):
                    self._promote(step, live, journal)
                else:
                    self._remove(step, live)
                    journal.update(
                        step.member.name, state="old member removed", removed=step.member.id
                    )
                changed = True
            raise MembershipError(f"membership not settled after {self.max_steps} steps")

    def _settle(self, wanted: Sequence[Wanted], refused: Refuse) -> tuple[Live, Step]:
        """After a change of this run, etcd takes a moment to settle (a new voter's first
        health check, two members naming different leaders): read the cluster again until
        the planner no longer refuses, up to the timeout; then its last answer stands."""
        self.log(f"etcd membership: waiting for the cluster to settle ({refused.reason})")
        deadline = time.monotonic() + self.timeout
        while True:
            time.sleep(POLL)
            live = self.read(wanted)
            step = plan_reconcile(wanted, live)
            if not isinstance(step, Refuse) or time.monotonic() > deadline:
                return live, step

    def remove(
        self,
        name: str,
        wanted: Sequence[Wanted],
        allow_even: bool = False,
        unreachable: bool = False,
    ) -> str:
        """Take member ``name`` (no longer in ``wanted``) out of the cluster, then stop its
        etcd and wipe its data dir (skipped, saying so, when its host is ``unreachable``);
        the final note. A run killed after ``member remove`` finishes the host step; a run
        after a finished removal says so and changes nothing."""
        record = self.recorded_removal(name)
        journal = self._journal(f"remove {name}")
        with _recorded(journal):
            live = self.read(wanted)
            step = plan_remove(name, wanted, live, allow_even)
            pending = isinstance(step, Done) and record.get("state") in HOST_STEP_PENDING
            if pending:
                self.log(f"etcd membership: {name} was removed by an earlier run; its host next")
            else:
                self.log(f"etcd membership: {step.describe()}")
            if isinstance(step, Refuse):
                journal.update(status="refused")
                raise MembershipRefused(step.reason)
            if isinstance(step, RemoveMember):
                # Recorded first: a run killed right after `member remove` finds no member
                # and this state, and finishes the host step.
                journal.update(name, state="removing", member_id=step.member.id)
                self._remove(step, live)
                journal.update(name, state="removed")
            elif not pending:
                already = removed_note(name, record)
                if already:
                    return already  # the finished journal is kept as it is
                journal.update(status="finished")
                return step.describe()
            if unreachable:
                self.log(
                    f"etcd membership: {name} is unreachable: its etcd is not stopped and its "
                    "data dir not wiped (never start it again with that data)"
                )
                host = "its host skipped as unreachable"
            else:
                self.log(
                    f"etcd membership: stopping etcd on {name}, wiping its data dir and deleting "
                    "its keys"
                )
                self.hosts.stop_and_wipe(name)
                host = "etcd stopped, its data dir wiped and its keys deleted on its host"
            journal.update(name, state="done", host=host)
            journal.update(status="finished")
            return f"{name} removed from the etcd cluster: {host}"

    def recorded_removal(self, name: str) -> dict:
        """The journal's record of the last ``remove NAME`` run ({} when the journal holds
        another command): ``state`` is in `HOST_STEP_PENDING` or ``"done"``."""
        recorded = Journal.recorded(self.journal_path)
        if recorded.get("target") != f"remove {name}":
            return {}
        return recorded.get("nodes", {}).get(name, {})

    def read(self, wanted: Sequence[Wanted]) -> Live:
        """The cluster as it is now: members, their health, leaders, alarms, and which
        inventory hosts without a healthy member have an empty data dir."""
        seeds = [w.client_url for w in wanted]
        try:
            members = self.client.members(seeds)
        except EtcdctlError as exc:
            raise MembershipError(f"cannot read the etcd member list ({exc})") from None
        health = self.client.health(members)
        healthy = [m.client_urls[0] for m in members if health[m.id] is None]
        fine = {m.name for m in members if health[m.id] is None}
        return Live(
            members=members,
            health=health,
            leaders=self.client.leaders(healthy) if healthy else frozenset(),
            alarms=self.client.alarms(healthy) if healthy else (),
            empty_data=frozenset(
                w.name for w in wanted if w.name not in fine and self.hosts.data_dir_empty(w.name)
            ),
        )

    def _add(self, step: AddLearner, live: Live, journal: Journal) -> None:
        self._snapshot(live, f"add-{step.wanted.name}")
        endpoints = _voter_endpoints(live)
        member_id, initial = self._retrying(
            f"adding {step.wanted.name}",
            lambda: self.client.add_learner(endpoints, step.wanted.name, step.wanted.peer_url),
        )
        journal.update(
            step.wanted.name, state="added", member_id=member_id, initial_cluster=initial
        )
        self.log(f"etcd membership: {step.wanted.name} added as learner {member_id}")

    def _start(self, step: StartMember, live: Live, journal: Journal) -> None:
        record = journal.node(step.wanted.name)
        if record.get("member_id") == step.member.id and record.get("initial_cluster"):
            initial = record["initial_cluster"]
        else:  # killed before the journal kept member add's answer: etcd's own rule
            initial = _initial_cluster(live.members, step.member.id, step.wanted.name)
            journal.update(step.wanted.name, member_id=step.member.id, initial_cluster=initial)
        self.log(
            f"etcd membership: starting {step.wanted.name} with initial-cluster-state existing "
            f"and initial-cluster {initial}"
        )
        self.hosts.start_member(step.wanted.name, initial)
        journal.update(step.wanted.name, state="started")

        endpoints = _voter_endpoints(live)

        def joined() -> bool:
            members = self.client.members(endpoints)
            return any(m.id == step.member.id and m.started for m in members)

        if not _poll(joined, self.timeout):
            raise MembershipError(
                f"{step.wanted.name} did not join within {self.timeout:.0f}s: see its etcd log"
            )

    def _promote(self, step: Promote, live: Live, journal: Journal) -> None:
        self._snapshot(live, f"promote-{step.wanted.name}")
        endpoints = _voter_endpoints(live)
        self._retrying(
            f"promoting {step.wanted.name}",
            lambda: self.client.promote(self._at_leader(live, endpoints), step.member.id),
        )
        journal.update(step.wanted.name, state="done")
        self.log(f"etcd membership: {step.wanted.name} is a voter ({len(live.voters) + 1} voters)")

    def _at_leader(self, live: Live, endpoints: list[str]) -> list[str]:
        """The leader's client URL, as ``endpoints`` report it now (all of them when they do
        not agree): a follower forwards a promotion to the leader over its peer API, which
        refuses it once etcd's authorisation is on ("auth: user name is empty")."""
        leaders = self.client.leaders(endpoints)
        found = [m.client_urls[0] for m in live.voters if m.id in leaders and m.client_urls]
        return found if len(leaders) == 1 and found else endpoints

    def _remove(self, step: RemoveMember, live: Live) -> None:
        self._snapshot(live, f"remove-{step.member.name or step.member.id}", step.member)
        others = [e for e in _voter_endpoints(live) if e not in step.member.client_urls]
        if step.move_leader_to:
            self.log(f"etcd membership: moving leadership to {step.move_leader_to} first")
            self.client.move_leader(step.member.client_urls[0], step.move_leader_to)
        self._retrying(
            f"removing {step.member.label()}", lambda: self.client.remove(others, step.member.id)
        )
        self.log(f"etcd membership: member {step.member.label()} removed")

    def _retrying(self, what: str, change: Callable[[], T]) -> T:
        """Run ``change``, again while etcd answers with one of its own transient refusals
        (a learner not in sync yet; a member connected for less than 5 s), up to the timeout."""
        deadline = time.monotonic() + self.timeout
        said = None
        while True:
            try:
                return change()
            except EtcdctlError as exc:
                transient = next((t for t in TRANSIENT if t in str(exc)), None)
                if transient is None or time.monotonic() > deadline:
                    raise MembershipError(f"{what}: {exc}") from None
                if transient != said:
                    self.log(f"etcd membership: {what}: waiting, etcd says {exc}")
                    said = transient
            time.sleep(POLL)

    def _snapshot(self, live: Live, why: str, leaving: Member | None = None) -> None:
        """Save and check a snapshot from a healthy follower (the leader if none), not from
        the member ``leaving``."""
        source = live.snapshot_source(leaving)
        if source is None:
            raise MembershipError("no change without a snapshot: no healthy voter to take it")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = f"{self.snapshot_dir}/etcd-{stamp}-{why}.db"
        try:
            status = save_snapshot(self.client, source.client_urls[0], path)
        except SnapshotError as exc:
            raise MembershipError(f"no change without a good snapshot: {exc}") from None
        self.log(f"etcd membership: snapshot {path} from {source.name}: {status.describe()}")
        # Keep the newest few: each holds every Secret and the whole database.
        self.client.run(
            f"ls -1t {shlex.quote(self.snapshot_dir)}/etcd-*.db 2>/dev/null "
            f"| tail -n +{MEMBERSHIP_SNAPSHOTS_KEPT + 1} | xargs -r rm -f"
        )

    def _journal(self, target: str) -> Journal:
        """This command's journal: the unfinished one of the same command is resumed; an
        unfinished one of another command refuses the run."""
        try:
            return Journal.continue_or_start(
                self.journal_path, target, what="etcd membership change"
            )
        except JournalError as exc:
            raise MembershipError(str(exc)) from None


def removed_note(name: str, record: Mapping[str, Any]) -> str | None:
    """What to say when the journal ``record`` (`Membership.recorded_removal`) shows ``name``
    removed by an earlier run; None otherwise."""
    if record.get("state") != "done":
        return None
    return (
        f"{name} was already removed (member {record.get('member_id')}; "
        f"{record.get('host', 'its host done')}): nothing to do"
    )


@contextmanager
def _recorded(journal: Journal) -> Iterator[None]:
    """Mark the journal interrupted when a step raises (refusals set their own status)."""
    try:
        yield
    except BaseException:
        if journal.data.get("status") == "running":
            journal.update(status="interrupted")
        raise


def _voter_endpoints(live: Live) -> list[str]:
    """The client URLs of the healthy voters (where changes are sent)."""
    return [m.client_urls[0] for m in live.voters if live.healthy(m) and m.client_urls]


def _initial_cluster(members: Sequence[Member], new_id: str, new_name: str) -> str:
    """The ``initial-cluster`` etcdctl prints after ``member add`` (every member's peer URLs;
    the new member under its name)."""
    return ",".join(
        f"{new_name if m.id == new_id else m.name}={url}" for m in members for url in m.peer_urls
    )


def _poll(done: Callable[[], bool], timeout: float) -> bool:
    """Call ``done`` every `POLL` seconds until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True
