"""etcd membership planning: the live member list against the inventory's ``etcd`` group.

Pure logic, no etcd: given what etcd reported at execution time (`Live`) and the inventory
(`Wanted`), `plan_reconcile` and `plan_remove` return the one next step or a `Refuse` with a
one-line reason. `galley.etcd.members` runs the steps, reading `Live` again after each.

Rules (docs/etcd-membership): one change at a time; before any change every other member is
healthy, the members agree on one leader, no alarm is raised and no learner is pending; a new
host joins as a learner and is promoted once started; a replaced droplet (same name, empty
data dir, old member unreachable) has its old member removed first; a removal leaves at least
3 voters, and an even count only with an explicit opt-in. A member the inventory does not
list is never removed by a deploy: `unlisted_note` names it and the command that takes it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_VOTERS = 3


@dataclass(frozen=True)
class Member:
    """A member as ``etcdctl member list`` reports it (id in hex, as etcdctl prints it)."""

    id: str
    name: str  # "" until the member has started and joined
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    @property
    def started(self) -> bool:
        """Whether the member has ever started (etcd names it only then)."""
        return bool(self.name)

    def label(self) -> str:
        """How messages name the member."""
        return f"{self.name or '(not started)'} [{self.id} {','.join(self.peer_urls)}]"


@dataclass(frozen=True)
class Wanted:
    """A member the inventory's ``etcd`` group declares."""

    name: str
    peer_url: str
    client_url: str


@dataclass(frozen=True)
class Live:
    """What etcd and the hosts reported, at execution time."""

    members: tuple[Member, ...]
    health: Mapping[str, str | None]  # member id -> None when healthy, else why not
    leaders: frozenset[str] = frozenset()  # the leader ids the healthy members report
    alarms: tuple[str, ...] = ()
    empty_data: frozenset[str] = frozenset()  # inventory names whose data dir is empty

    def healthy(self, member: Member) -> bool:
        """Whether ``member`` answered healthy."""
        return member.id in self.health and self.health[member.id] is None

    def why(self, member: Member) -> str:
        """Why ``member`` is not healthy."""
        return self.health.get(member.id) or "not checked"

    @property
    def voters(self) -> list[Member]:
        """The voting members."""
        return [m for m in self.members if not m.is_learner]

    def snapshot_source(self, leaving: Member | None = None) -> Member | None:
        """Where to take a snapshot from: a healthy voter that follows (the leader if none
        does), never ``leaving``; None without a healthy voter."""
        voters = [m for m in self.voters if self.healthy(m) and m != leaving and m.client_urls]
        return next((m for m in voters if m.id not in self.leaders), voters[0] if voters else None)


@dataclass(frozen=True)
class Done:
    """Nothing to change."""

    note: str

    def describe(self) -> str:
        return self.note


@dataclass(frozen=True)
class Refuse:
    """No change is safe: ``reason`` says why, in one line."""

    reason: str

    def describe(self) -> str:
        return f"refused: {self.reason}"


@dataclass(frozen=True)
class AddLearner:
    """``member add NAME --peer-urls=URL --learner``."""

    wanted: Wanted

    def describe(self) -> str:
        return f"add {self.wanted.name} ({self.wanted.peer_url}) as a learner"


@dataclass(frozen=True)
class StartMember:
    """Start the added (not yet started) member on its host with ``existing``."""

    wanted: Wanted
    member: Member

    def describe(self) -> str:
        return f"start {self.wanted.name} (member {self.member.id}) to join the cluster"


@dataclass(frozen=True)
class Promote:
    """``member promote ID`` once the learner has caught up."""

    wanted: Wanted
    member: Member

    def describe(self) -> str:
        return f"promote learner {self.wanted.name} ({self.member.id}) to a voter"


@dataclass(frozen=True)
class RemoveMember:
    """``member remove ID`` (leadership moved to ``move_leader_to`` first when set)."""

    member: Member
    reason: str
    move_leader_to: str | None = None

    def describe(self) -> str:
        return f"remove member {self.member.label()}: {self.reason}"


Step = Done | Refuse | AddLearner | StartMember | Promote | RemoveMember


def quorum(voters: int) -> int:
    """The votes a cluster of ``voters`` needs to commit: floor(n/2)+1."""
    return voters // 2 + 1


def unlisted(wanted: Sequence[Wanted], members: Sequence[Member]) -> list[Member]:
    """The ``members`` the inventory's etcd group does not declare (by name, or by peer URL
    for a member not started yet)."""
    names = {w.name for w in wanted}
    urls = {w.peer_url for w in wanted}
    return [
        m
        for m in members
        if (m.name not in names if m.started else not urls.intersection(m.peer_urls))
    ]


def unlisted_note(wanted: Sequence[Wanted], members: Sequence[Member]) -> str | None:
    """The note a deploy logs about members the inventory does not list (galley never
    removes them on its own), or None when every member is listed."""
    found = unlisted(wanted, members)
    if not found:
        return None
    advice = "; ".join(
        f"{m.label()}: `galley etcd remove INVENTORY {m.name}`"
        if m.started
        else f"{m.label()}: `etcdctl member remove {m.id}`"
        for m in found
    )
    return (
        f"note: {len(found)} etcd member(s) not in the inventory's etcd group, left in the "
        f"cluster (they still count for quorum): {advice}"
    )


def plan_reconcile(wanted: Sequence[Wanted], live: Live) -> Step:
    """The next step towards the members ``wanted``: finish a pending join first, then
    replace a replaced droplet's old member, then add the first missing host. Members not in
    the inventory are left alone (``galley etcd remove`` takes them out)."""
    by_url = {w.peer_url: w for w in wanted}
    pending = [m for m in live.members if m.is_learner or not m.started]
    if len(pending) > 1:
        labels = ", ".join(m.label() for m in pending)
        return Refuse(f"more than one member is pending ({labels}): finish or remove them by hand")
    if pending:
        return _finish_join(pending[0], by_url.get(pending[0].peer_urls[0]), live)
    missing = []
    for w in wanted:
        step = _check_wanted(w, live)
        if step == "missing":
            missing.append(w)
        elif step is not None:
            return step
    if missing:
        w = missing[0]
        if w.name not in live.empty_data:
            return Refuse(
                f"{w.name} is not a member but its data dir is not empty: wipe it before it "
                "joins (it may hold a removed member's data)"
            )
        problem = _gate(live, wanted=wanted)
        if problem:
            return Refuse(f"not adding {w.name}: {problem}")
        return AddLearner(w)
    return Done(_summary(wanted, live))


def plan_remove(name: str, wanted: Sequence[Wanted], live: Live, allow_even: bool) -> Step:
    """The step that takes member ``name`` out of the cluster, or a refusal. ``allow_even``
    is the opt-in for leaving an even number of voters (5 -> 4 on the way to 3)."""
    if any(w.name == name for w in wanted):
        return Refuse(
            f"{name} is still in the inventory's etcd group: drop it there first, or the next "
            "deploy adds it back"
        )
    matches = [m for m in live.members if m.name == name]
    if not matches:
        return Done(f"{name} is not a member of the etcd cluster")
    member = matches[0]
    voters = len(live.voters) - (0 if member.is_learner else 1)
    if not member.is_learner:
        if voters < MIN_VOTERS:
            return Refuse(
                f"removing {name} would leave {voters} voters; galley keeps at least "
                f"{MIN_VOTERS} (replace the member instead)"
            )
        if voters % 2 == 0 and not allow_even:
            return Refuse(
                f"removing {name} would leave {voters} voters, an even count that tolerates "
                f"no more failures than {voters - 1}: pass --allow-even to accept it on the way "
                f"to {voters - 1}"
            )
    problem = _gate(live, exclude=member, wanted=wanted)
    if problem:
        return Refuse(f"not removing {name}: {problem}")
    healthy_after = sum(1 for m in live.voters if m != member and live.healthy(m))
    if healthy_after < quorum(voters):
        return Refuse(f"not removing {name}: {healthy_after} healthy voters could lose quorum")
    successor = None
    if member.id in live.leaders:
        successor = next(m.id for m in live.voters if m != member and live.healthy(m))
    return RemoveMember(member, "leaving the cluster", successor)


def _finish_join(member: Member, wanted: Wanted | None, live: Live) -> Step:
    """The step for the one pending member: start it, or promote it once started."""
    if wanted is None:
        return Refuse(
            f"member {member.label()} is pending but not in the inventory: remove it "
            f"(etcdctl member remove {member.id}) or add its host to the etcd group"
        )
    if member.started and member.name != wanted.name:
        return Refuse(f"member {member.label()} has {wanted.name}'s peer URL")
    if not member.started:
        return StartMember(wanted, member)
    if not member.is_learner:
        return Refuse(f"member {member.label()} is in an unexpected state")
    problem = _gate(live, exclude=member)
    if problem:
        return Refuse(f"not promoting {wanted.name}: {problem}")
    return Promote(wanted, member)


def _check_wanted(w: Wanted, live: Live) -> Step | str | None:
    """For one inventory host with a started member: None when it is fine (or merely down,
    which the gate reports), ``"missing"`` when no member stands for it, or the step that
    replaces a replaced droplet's old member (or a refusal)."""
    by_name = next((m for m in live.members if m.name == w.name), None)
    by_url = next((m for m in live.members if w.peer_url in m.peer_urls), None)
    if by_url is not None and by_url.name != w.name:
        return Refuse(f"{w.name}'s peer URL {w.peer_url} belongs to member {by_url.label()}")
    member = by_name or by_url
    if member is None:
        return "missing"
    moved = w.peer_url not in member.peer_urls
    if live.healthy(member):
        if moved:
            return Refuse(
                f"{w.name} is a healthy member at {','.join(member.peer_urls)} but the "
                f"inventory says {w.peer_url}: add the new droplet under a new name, then "
                "remove the old one"
            )
        return None
    if w.name not in live.empty_data:
        if moved:
            return Refuse(f"{w.name} moved to {w.peer_url} but its data dir there is not empty")
        return None  # down with its data: the gate refuses changes until it is back
    problem = _gate(live, exclude=member)
    if problem:
        return Refuse(f"not replacing {w.name}: {problem}")
    voters = len(live.voters) - 1
    healthy_after = sum(1 for m in live.voters if m != member and live.healthy(m))
    if healthy_after < quorum(voters):
        return Refuse(f"not replacing {w.name}: {healthy_after} healthy voters could lose quorum")
    why = f"{w.name}'s droplet was replaced (empty data dir, old member down)"
    return RemoveMember(member, why)


def _gate(live: Live, exclude: Member | None = None, wanted: Sequence[Wanted] = ()) -> str | None:
    """Why no membership change is safe now (``exclude``: the member the change is about;
    an unhealthy member not in ``wanted`` is named with the command that takes it out)."""
    strays = unlisted(wanted, live.members) if wanted else []
    for member in live.members:
        if member == exclude:
            continue
        if member.is_learner or not member.started:
            return f"member {member.label()} is pending (one change at a time)"
        if not live.healthy(member):
            why = f"member {member.label()} is unhealthy ({live.why(member)})"
            if member in strays:
                why += (
                    " and not in the inventory's etcd group: take it out first with "
                    f"`galley etcd remove INVENTORY {member.name}`"
                )
            return why
    if live.alarms:
        return f"etcd alarm raised: {'; '.join(live.alarms)}"
    if len(live.leaders) != 1:
        found = ", ".join(sorted(live.leaders)) or "none"
        return f"the members do not agree on one leader (leaders reported: {found})"
    return None


def _summary(wanted: Sequence[Wanted], live: Live) -> str:
    """The Done note: the voters, and members the inventory does not list."""
    voters = ", ".join(sorted(m.name for m in live.voters))
    note = f"etcd membership matches the inventory ({len(live.voters)} voters: {voters})"
    extra = sorted(m.name or m.id for m in unlisted(wanted, live.members))
    if extra:
        note += f"; not in the inventory: {', '.join(extra)} (galley etcd remove takes them out)"
    down = sorted(m.name for m in live.members if not live.healthy(m))
    if down:
        note += f"; unhealthy: {', '.join(down)}"
    return note
