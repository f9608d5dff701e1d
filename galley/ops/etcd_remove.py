"""`galley etcd remove INVENTORY NAME [--allow-even] [--unreachable] [--yes]`: take one member
out of the etcd cluster.

NAME is an etcd member; it may still be in the inventory's ``etcd`` group (the common case:
its host is reached through that entry to stop etcd and wipe its data dir) or, with
``--unreachable`` (a dead droplet), already gone from it. The members wanted afterwards are
the etcd group without NAME. etcdctl runs over SSH on another member that answers, never on
the leaving host.

Before any change (exit 2, nothing changed): the inventory, the hosts needed (a member to run
etcdctl, and NAME's host unless ``--unreachable``), the planner's refusals
(`galley.etcd.plan.plan_remove`: fewer than 3 voters left, an even count without
``--allow-even``, another member unhealthy or pending, no single leader, an alarm), Vault for
the cluster lock, the confirmation (or ``--yes``), the lock. Then the executor
(`Membership.remove`): snapshot, leadership moved away if NAME leads, ``member remove``, then
on NAME's host etcd, its snapshot timer and the certificate renewal stopped and disabled, its
data dir wiped and its etcd keys and certificates deleted. Every step is in the
membership journal: running the same command again finishes a run that stopped, and after a
finished one says so. Afterwards the operator drops NAME from the inventory and runs the deploy,
so the apiservers' ``--etcd-servers`` drop it too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyinfra.api import Inventory
from pyinfra.api.host import Host

from galley.components.etcd import member_hosts
from galley.etcd.client import EtcdClient, EtcdctlError, host_runner
from galley.etcd.group import member_name, wanted
from galley.etcd.layout import DATA_DIR, HEALTH_TIMEOUT, MEMBERSHIP_JOURNAL
from galley.etcd.members import (
    HOST_STEP_PENDING,
    Membership,
    MembershipError,
    MembershipRefused,
    removed_note,
)
from galley.etcd.plan import Done, Refuse, RemoveMember, Wanted, plan_remove
from galley.etcd.snapshot import HOST_WORK_DIR
from galley.host.restarts import RestartError
from galley.journal import JournalError, operator_dir
from galley.lock import LockError, hold, lock_paths
from galley.ops.batches import Batches, Connected
from galley.ops.confirm import confirmed
from galley.ops.revocation import retire_host, revocation_paths
from galley.vault.client import VaultError, VaultSettings, connect
from galley.vault.pki import mount_path

COMMAND = "etcd remove"


class EtcdRemoveError(Exception):
    """The removal is refused before any change; one line."""


@dataclass(frozen=True)
class Target:
    """NAME against the inventory's etcd group."""

    name: str  # the member name
    host: str | None  # its inventory host, None when the etcd group does not list it
    others: tuple[str, ...]  # the other etcd hosts, in inventory order
    wanted: tuple[Wanted, ...]  # the members wanted afterwards: the etcd group without NAME


def target(inventory: Inventory, name: str, unreachable: bool) -> Target:
    """Find NAME in the etcd group (by member or host name); refused when it is not listed
    and not ``unreachable`` (galley reaches a host only through its inventory entry)."""
    group = list(inventory.get_group("etcd", []))
    if not group:
        raise EtcdRemoveError("the inventory has no etcd group")
    leaving = next((h for h in group if name in (member_name(h), h.name)), None)
    if leaving is None and not unreachable:
        raise EtcdRemoveError(
            f"{name} is not in the inventory's etcd group: galley reaches a host through its "
            "inventory entry to stop its etcd and wipe its data dir; for a droplet that is "
            "gone, pass --unreachable"
        )
    others = [h for h in group if h is not leaving]
    return Target(
        member_name(leaving) if leaving else name,
        leaving.name if leaving else None,
        tuple(h.name for h in others),
        tuple(wanted(h) for h in others),
    )


def etcdctl_client(hosts: Sequence[Host], wanted: Sequence[Wanted]) -> tuple[Host, EtcdClient]:
    """The first of ``hosts`` (other members, connected) whose etcdctl reads the member
    list, with its client; EtcdRemoveError naming why each failed."""
    seeds = [w.client_url for w in wanted]
    errors = []
    for host in hosts:
        client = EtcdClient(host_runner(host))
        try:
            client.members(seeds)
        except (EtcdctlError, ValueError) as exc:
            errors.append(f"{host.name}: {exc}")
            continue
        return host, client
    raise EtcdRemoveError(
        "no other etcd member can read the member list over SSH"
        + (f" ({'; '.join(errors)})" if errors else "")
    )


@dataclass
class EtcdRemoval:
    """One removal: what is checked and shown before any change, then the executor."""

    name: str
    wanted: Sequence[Wanted]
    membership: Membership
    listed: bool  # NAME is in the inventory's etcd group
    unreachable: bool = False
    allow_even: bool = False
    runner: str = "another member"  # where etcdctl runs, for the plan
    # After the member is gone: its certificates revoked, its renewal login deleted; lines.
    retire: Callable[[], list[str]] = lambda: []

    def plan(self) -> tuple[list[str], bool]:
        """The lines a person confirms and whether there is anything to do; EtcdRemoveError
        when the planner refuses or NAME is unknown."""
        try:
            live = self.membership.read(self.wanted)
        except MembershipError as exc:
            raise EtcdRemoveError(str(exc)) from None
        step = plan_remove(self.name, self.wanted, live, self.allow_even)
        if isinstance(step, Refuse):
            raise EtcdRemoveError(step.reason)
        record = self.membership.recorded_removal(self.name)
        host_step = (
            f"  --unreachable: no host steps ({self.name}'s etcd is neither stopped nor wiped: "
            "never boot that droplet again as it is)"
            if self.unreachable
            else (
                f"  on {self.name}: stop and disable etcd, wipe {DATA_DIR}/member, delete its "
                "etcd keys and certificates"
            )
        )
        if isinstance(step, RemoveMember):
            voters = len(live.voters) - (0 if step.member.is_learner else 1)
            lines = [
                f"remove etcd member {step.member.label()} ({len(live.voters)} voters -> "
                f"{voters}); etcdctl runs on {self.runner}:",
                f"  snapshot to {self.membership.snapshot_dir} on {self.runner}, checked",
            ]
            if step.move_leader_to:
                lines.append(f"  {self.name} leads: move leadership to {step.move_leader_to}")
            return [*lines, f"  etcdctl member remove {step.member.id}", host_step], True
        if record.get("state") in HOST_STEP_PENDING:
            return [
                f"{self.name} is no longer an etcd member; an earlier run stopped before its "
                "host step:",
                host_step,
            ], True
        already = removed_note(self.name, record)
        if already:
            return [already], False
        if not self.listed:
            raise EtcdRemoveError(
                f"{self.name} is not a member of the etcd cluster and not in the inventory's "
                "etcd group"
            )
        assert isinstance(step, Done)
        return [f"{step.note}: nothing to remove"], False

    def run(self) -> str:
        """Run the executor: the final note (MembershipError, RestartError, EtcdctlError
        when it stops; the journal lets the next run finish)."""
        return self.membership.remove(self.name, self.wanted, self.allow_even, self.unreachable)

    def next_step(self) -> str:
        """The line that tells the operator what to do next."""
        deploy = (
            "then run the deploy (`pyinfra INVENTORY deploys/cluster.py`, or at least "
            "deploys/control_plane.py) so the apiservers' --etcd-servers drop it"
        )
        if not self.listed:
            return f"next: {deploy}"
        return (
            f"next: drop {self.name} from the inventory's etcd group (the lab: `galley lab "
            f"remove {self.name}`; DigitalOcean: destroy the droplet or drop its role:etcd tag) "
            f"before any deploy, which would add it back as a new member; {deploy}"
        )


def run_removal(
    removal: EtcdRemoval,
    yes: bool,
    lock: Callable[[], object],
    out: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    """Plan, confirm, lock, run: 0 done (or nothing to do), 1 stopped (run it again to
    finish), 2 refused before any change. ``lock`` takes the cluster lock (LockError,
    VaultError when it cannot)."""
    try:
        lines, changes = removal.plan()
    except EtcdRemoveError as exc:
        return _refused(exc)
    if not changes:
        for line in lines:
            out(line)
        # Retire again: an earlier run may have stopped before it (it finds nothing then).
        done = removed_note(removal.name, removal.membership.recorded_removal(removal.name))
        if done and _retire(removal, out):
            return 1
        out(removal.next_step())
        return 0
    if not confirmed(lines, yes, COMMAND):
        return 2
    try:
        lock()
    except (LockError, VaultError) as exc:
        return _refused(exc)
    try:
        note = removal.run()
    except (MembershipRefused, JournalError) as exc:  # refused when it read the cluster again
        return _refused(exc)
    except (MembershipError, RestartError, EtcdctlError) as exc:
        return _stopped(removal, exc)
    out(note)
    if _retire(removal, out):
        return 1
    if removal.wanted and len(removal.wanted) % 2 == 0 and removal.listed:
        out(
            f"note: the etcd group will have {len(removal.wanted)} hosts, an even count: set "
            "etcd_allow_even_members = True until the next removal (or an addition) makes it odd"
        )
    out(removal.next_step())
    return 0


def _retire(removal: EtcdRemoval, out: Callable[[str], None]) -> int:
    """Revoke the removed member's certificates: 0 done, 1 stopped (run it again)."""
    try:
        for line in removal.retire():
            out(line)
    except VaultError as exc:
        return _stopped(removal, exc)
    return 0


def _refused(exc: Exception) -> int:
    print(f"galley: {COMMAND}: {exc} (nothing was changed)", file=sys.stderr)
    return 2


def _stopped(removal: EtcdRemoval, exc: Exception) -> int:
    print(
        f"galley: {COMMAND}: {exc}; run it again to finish ({removal.membership.journal_path})",
        file=sys.stderr,
    )
    return 1


def _reach(connected: Connected, found: Target, unreachable: bool) -> tuple[Host, EtcdClient]:
    """The etcdctl host and client; refused when a host the removal needs is unreachable."""
    if found.host is not None and not unreachable and found.host in connected.errors:
        raise EtcdRemoveError(
            f"cannot reach {found.host} ({connected.errors[found.host]}): its etcd must be "
            "stopped and its data dir wiped; for a dead droplet pass --unreachable"
        )
    others = [connected.hosts[h] for h in found.others if h in connected.hosts]
    if not others:
        why = "; ".join(f"{h}: {e}" for h, e in connected.errors.items() if h in found.others)
        raise EtcdRemoveError(f"cannot reach any other etcd member ({why or 'none listed'})")
    return etcdctl_client(others, found.wanted)


def _mounts(inventory: Inventory, found: Target, cluster: str) -> list[str]:
    """The mounts whose certificates naming the leaving host are revoked: etcd's, and its
    host identity's unless the host stays in another group."""
    groups = set(inventory.get_host(found.host).groups) if found.host else set()
    stays = groups & {"control_plane", "workers"}
    return [mount_path(cluster, "etcd"), *([] if stays else [mount_path(cluster, "host")])]


def etcd_remove_cli(
    inventory: Inventory,
    name: str,
    allow_even: bool = False,
    yes: bool = False,
    unreachable: bool = False,
) -> int:
    """`galley etcd remove`: 0 done (or nothing to do), 1 stopped (run it again to finish),
    2 refused before any change."""
    try:
        found = target(inventory, name, unreachable)
        data = inventory.get_host(found.others[0] if found.others else found.host).data
        cluster = data.cluster_name
        vault = connect(
            VaultSettings.from_data(data), lock_paths(cluster) | revocation_paths(cluster)
        )
    except (EtcdRemoveError, VaultError) as exc:
        return _refused(exc)
    needed = [*found.others, *([found.host] if found.host and not unreachable else [])]
    with Batches(inventory).connected(needed) as connected:
        try:
            runner, client = _reach(connected, found, unreachable)
        except EtcdRemoveError as exc:
            return _refused(exc)
        membership = Membership(
            client=client,
            hosts=member_hosts(list(connected.hosts.values())),
            journal_path=operator_dir(data) / MEMBERSHIP_JOURNAL,
            snapshot_dir=HOST_WORK_DIR,
            log=lambda line: print(line, flush=True),
            timeout=HEALTH_TIMEOUT,
        )
        removal = EtcdRemoval(
            found.name,
            found.wanted,
            membership,
            listed=found.host is not None,
            unreachable=unreachable,
            allow_even=allow_even,
            runner=runner.name,
            retire=lambda: retire_host(
                vault, cluster, found.host or found.name, _mounts(inventory, found, cluster)
            ),
        )
        return run_removal(removal, yes, lambda: hold(vault, data))
