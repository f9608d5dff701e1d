"""etcd while a deploy runs: what preparing decides from the cluster (bootstrap.env's state,
a member the cluster removed, the cluster's identity), and the unit's hooks: a new member's
join (learner, start, promote; `galley.etcd.members`), the wait after a first start, and the
rolling restart (others healthy, a checked snapshot, leadership handed off first)."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

import gevent
from pyinfra import logger
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import server

from galley.etcd import identity as cluster_identity
from galley.etcd.client import EtcdClient, host_runner
from galley.etcd.etcdctl import HEALTH_CERT, HEALTH_KEY, etcdctl_command
from galley.etcd.group import client_endpoints, member_name, members, wanted
from galley.etcd.identity import SECRET as IDENTITY
from galley.etcd.layout import (
    BOOTSTRAP_PATH,
    CGROUP_SETUP_FAILED,
    DATA_DIR,
    HEALTH_TIMEOUT,
    MEMBERSHIP_JOURNAL,
    SETTLE_COMMAND,
    SNAPSHOT_JOB,
    UNIT,
)
from galley.etcd.members import Membership
from galley.etcd.plan import Member, unlisted_note
from galley.etcd.snapshot import HOST_WORK_DIR
from galley.facts.etcd import (
    EtcdAccess,
    EtcdClusterIdentity,
    EtcdDataDir,
    EtcdLocalMemberId,
    EtcdMembers,
)
from galley.host.restarts import RestartError, systemctl_restart, wait_until_healthy
from galley.journal import operator_dir
from galley.problems import PreflightError
from galley.text import clean
from galley.vault import kv

# bootstrap.env for a host, its state and initial cluster (the component renders it).
BootstrapText = Callable[[Host, str, str], str]
# What a leaving member's host stops (units) and deletes (files) besides etcd and its data.
Leaving = Callable[[Host], tuple[list[str], list[str]]]


def bootstrap_settings(
    inventory_cluster: str, own: Mapping[str, Any], cluster_exists: bool
) -> tuple[str, str] | None:
    """``initial-cluster-state`` and ``initial-cluster`` for a member's bootstrap.env, from
    its `EtcdDataDir` fact (``own``) and whether another etcd host has member data; None when
    the host must join the cluster first (`_join` writes the file at execution time).

    - A member with data: ``existing``, with the list its file records (the inventory's
      without one). etcd reads neither with data; keeping the recorded list leaves the file
      alone when members come and go.
    - Every data dir empty: ``new`` with the inventory's list, until the wait after the first
      start rewrites it to ``existing`` (`_settle`), so the next deploy changes nothing.
    - An empty data dir beside a cluster with data: a join (learner, then voter).
    """
    if not own["empty"]:
        return "existing", own["cluster"] or inventory_cluster
    if not cluster_exists:
        return "new", inventory_cluster
    return None


def data_dir(host: Host) -> dict[str, Any]:
    """The host's `EtcdDataDir` fact: whether its data dir holds member data, and what its
    bootstrap.env says."""
    return host.get_fact(EtcdDataDir, data_dir=DATA_DIR, bootstrap_env=BOOTSTRAP_PATH)


def local_endpoint(host: Host) -> str:
    """``host``'s own etcd client URL on loopback (where galley's etcdctl calls on it go)."""
    return f"https://127.0.0.1:{host.data.etcd_client_port}"


def _live_members(host: Host) -> list[Member] | None:
    """The member list as ``host``'s own etcd reports it (None when it does not answer)."""
    found = host.get_fact(EtcdMembers, endpoint=local_endpoint(host))["members"]
    if found is None:
        return None
    return [
        Member(
            m["id"] or "",
            m["name"],
            tuple(m["peer_urls"]),
            tuple(m["client_urls"]),
            m["is_learner"],
        )
        for m in found
    ]


@dataclass(frozen=True)
class _ClusterView:
    """What the first etcd host with member data whose etcd answers reports, once per run:
    the members, the cluster identity etcd holds (`EtcdClusterIdentity`'s value) and, read
    beside the rest of the run's preparing, etcd's users and roles (`EtcdAccess`)."""

    reader: Host
    members: list[Member]
    identity: Mapping[str, Any]
    access: Callable[[], Mapping[str, Any]]


_views: WeakKeyDictionary[State, _ClusterView | None] = WeakKeyDictionary()
# pyinfra prepares hosts concurrently (gevent): the first reads the view, the others wait.
_viewing = threading.Lock()


def cluster_view(state: State) -> _ClusterView | None:
    """The cluster as the first etcd host with member data whose etcd answers sees it (None
    when none does: then nothing is decided from it)."""
    with _viewing:
        if state not in _views:
            _views[state] = _read_view()
    return _views[state]


def _read_view() -> _ClusterView | None:
    for member in members():
        if data_dir(member)["empty"]:
            continue
        found = _live_members(member)
        if found is not None:
            access = gevent.spawn(access_of, member)
            return _ClusterView(member, found, _identity_in_etcd(member), access.get)
    return None


def access_of(host: Host, trust_stamp: bool = True) -> Mapping[str, Any]:
    """etcd's users and roles as ``host``'s own etcd reports them (`EtcdAccess`), not read
    while galley's stamp names the current auth revision (unless not ``trust_stamp``)."""
    return host.get_fact(EtcdAccess, endpoint=local_endpoint(host), trust_stamp=trust_stamp)


def _identity_in_etcd(host: Host) -> Mapping[str, Any]:
    """The cluster identity ``host``'s own etcd holds (`EtcdClusterIdentity`)."""
    return host.get_fact(EtcdClusterIdentity, endpoint=local_endpoint(host))


# Per run: the cluster identity Vault's KV store holds (what etcd must say).
_identities: WeakKeyDictionary[State, str] = WeakKeyDictionary()


def cluster_identity_of(host: Host, context: Mapping[str, Any]) -> str:
    """The cluster's identity from Vault, read once per run."""
    if host.state not in _identities:
        value = kv.read(context["vault"](), host.data.cluster_name, IDENTITY)
        _identities[host.state] = value["id"]
    return _identities[host.state]


def identity_command(host: Host, identity: str) -> str:
    """Write ``identity`` into etcd unless a value is there already (one transaction)."""
    endpoint = local_endpoint(host)
    key, value = cluster_identity.KEY, cluster_identity.marker(identity)
    requests = f'create("{key}") = "0"\n\nput {key} {value}\n\n\n'
    return f"printf {shlex.quote(requests)} | {etcdctl_command([endpoint], 'txn')} >/dev/null"


def keep_identity(host: Host, view: _ClusterView, identity: str) -> None:
    """On the host that read the cluster: record the identity in etcd when it has none;
    refuse the run when etcd holds another cluster's."""
    if view.identity.get("error"):
        return
    held = view.identity.get("identity")
    if held is None:
        server.shell(
            name="Record the cluster identity in etcd", commands=[identity_command(host, identity)]
        )
    elif held != identity:
        raise PreflightError(
            f"{host.name}: etcd holds the identity of another cluster ({held}), while "
            f"{kv.kv_mount(host.data.cluster_name)}/{IDENTITY.name} says "
            f"{identity}: check vault_addr and cluster_name; nothing was changed"
        )


# The runs (pyinfra States) whose unlisted members were looked for already: once per run.
_noted: WeakSet[State] = WeakSet()


def note_unlisted(host: Host, live: list[Member] | None) -> None:
    """Once per run, on the first etcd host with member data to be prepared: log a warning
    naming each live member the inventory's etcd group does not list. A deploy never removes
    a member (a host missing from the inventory may be a mistake); `galley etcd remove` does."""
    if host.state in _noted:
        return
    _noted.add(host.state)
    note = unlisted_note([wanted(h) for h in members()], live or [])
    if note:
        host.log(note, logger.warning)


def _member_id_in_journal(host: Host) -> str | None:
    """The member id ``host``'s etcd last ran as (`EtcdLocalMemberId`)."""
    return host.get_fact(EtcdLocalMemberId, unit=UNIT)


def refuse_removed_member(host: Host, live: list[Member] | None) -> None:
    """Refuse the run while preparing when ``host``'s data dir holds a member the cluster no
    longer has (removed while the droplet was down): etcd would refuse to start with it, and
    the deploy would wait for a health that never comes."""
    if not live or member_name(host) in {member.name for member in live}:
        return
    found = _member_id_in_journal(host)
    which = f"member {found}" if found else "an earlier member"
    raise PreflightError(
        f"{host.name}: its etcd data dir {DATA_DIR} holds {which}, which is no longer in the "
        f"etcd cluster (removed, e.g. by `galley etcd remove --unreachable`); nothing was "
        "changed: wipe it on the host (`systemctl disable --now etcd && rm -rf "
        f"{DATA_DIR}/member`) so the next deploy adds it as a new member, or replace the "
        "droplet"
    )


class PyinfraMemberHosts:
    """`galley.etcd.members.MemberHosts` over connected pyinfra hosts (by member name): a
    deploy's etcd group at execution time, or the hosts `galley etcd remove` reached."""

    def __init__(
        self,
        hosts: Sequence[Host],
        bootstrap_text: BootstrapText,
        leaving: Leaving = lambda host: ([], []),
    ) -> None:
        self.hosts = {member_name(host): host for host in hosts}
        self.bootstrap_text = bootstrap_text
        self.leaving = leaving

    def data_dir_empty(self, name: str) -> bool:
        """Whether the host's data dir holds no member data (unknown, or a host not reached,
        counts as data)."""
        return name in self.hosts and data_dir(self.hosts[name])["empty"]

    def start_member(self, name: str, initial_cluster: str) -> None:
        """Write bootstrap.env with ``existing`` and ``initial_cluster``, start etcd (not
        waiting for it: the executor polls until it has joined)."""
        target = self.hosts[name]
        text = self.bootstrap_text(target, "existing", initial_cluster)
        _run(target, f"{_write_command(BOOTSTRAP_PATH, text)} && systemctl start --no-block etcd")

    def stop_and_wipe(self, name: str) -> None:
        """Stop and disable etcd (and the `leaving` units), empty its data dir, delete the
        `leaving` files (its keys and certificates)."""
        target = self.hosts[name]
        units, paths = self.leaving(target)
        stop = " ".join(shlex.quote(unit) for unit in [UNIT, *units])
        delete = " ".join(shlex.quote(path) for path in paths)
        _run(
            target,
            f"systemctl disable --now {stop} && rm -rf {DATA_DIR}/member"
            + (f" && rm -f {delete}" if delete else ""),
        )


def _write_command(path: str, text: str) -> str:
    """Replace ``path`` (root:etcd 0640) with ``text``, atomically."""
    tmp = shlex.quote(f"{path}.galley-new")
    return (
        f"umask 027 && printf %s {shlex.quote(text)} > {tmp} && chgrp etcd {tmp} && "
        f"mv {tmp} {shlex.quote(path)}"
    )


def _run(host: Host, command: str) -> None:
    ok, output = host.run_shell_command(command)
    if not ok:
        raise RestartError(f"{host.name}: {command.split(' && ')[-1]} failed: {output.stderr}")


def join(state: State, host: Host, unit: str, bootstrap_text: BootstrapText) -> None:
    """Before this host's etcd first starts beside a running cluster: reconcile the members
    with the inventory (a replaced droplet's old member removed, then each new host added as
    a learner, started with the list ``member add`` returned and promoted once caught up).
    Hooks run one host at a time; the first does every pending change, the next find none."""
    hosts = members()
    membership = Membership(
        client=EtcdClient(host_runner(host)),
        hosts=PyinfraMemberHosts(hosts, bootstrap_text),
        journal_path=operator_dir(host.data) / MEMBERSHIP_JOURNAL,
        snapshot_dir=HOST_WORK_DIR,  # on the host running it (0600: every Secret)
        log=host.log,
        timeout=HEALTH_TIMEOUT,
    )
    membership.reconcile([wanted(h) for h in hosts])


def _endpoint_health(host: Host, endpoints: Sequence[str]) -> dict[str, str | None]:
    """Each endpoint's health as seen from ``host`` (by the health check's identity): None
    when healthy, else the error."""
    health_check = etcdctl_command(
        endpoints, "endpoint", "health", "-w", "json", cert=HEALTH_CERT, key=HEALTH_KEY
    )
    _, output = host.run_shell_command(health_check + " 2>/dev/null")
    health: dict[str, str | None] = {endpoint: "no answer" for endpoint in endpoints}
    try:
        for entry in json.loads(output.stdout or "[]"):
            health[entry["endpoint"]] = None if entry.get("health") else entry.get("error", "?")
    except (ValueError, KeyError, TypeError):
        pass
    return health


def unhealthy(host: Host, endpoints: Sequence[str]) -> str | None:
    """The unhealthy endpoints with their errors, as seen from ``host``; None when all are ok."""
    health = _endpoint_health(host, endpoints)
    return ", ".join(f"{endpoint} ({error})" for endpoint, error in health.items() if error) or None


def wait_cluster_healthy(state: State, host: Host, unit: str) -> None:
    """After the first start: wait until the cluster is healthy, then settle bootstrap.env."""
    endpoints = client_endpoints(members())
    problem = wait_until_healthy(lambda: unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise RestartError(
            f"{host.name}: etcd cluster not healthy after {HEALTH_TIMEOUT:.0f}s: {problem}"
        )
    _run(host, f"{identity_command(host, _identities[state])} && {SETTLE_COMMAND}")


def restart_member(state: State, host: Host, unit: str) -> None:
    """Restart this member only while all others are healthy; hand off leadership first."""
    endpoints = client_endpoints(members())
    own = f"https://{host.data.private_ip}:{host.data.etcd_client_port}"
    others = [endpoint for endpoint in endpoints if endpoint != own]
    problem = unhealthy(host, others)
    if problem:
        raise RestartError(
            f"{host.name}: not restarting etcd while other members are unhealthy: {problem}"
        )
    _snapshot_before_restart(host)
    _hand_off_leadership(host, own, others)
    systemctl_restart(state, host, unit)
    problem = wait_until_healthy(lambda: unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise RestartError(
            f"{host.name}: etcd not healthy {HEALTH_TIMEOUT:.0f}s after its restart: "
            f"{problem}; stopping before any other member restarts"
        )


def _snapshot_before_restart(host: Host) -> None:
    """Run the member's snapshot job (save, check, keep the newest) before etcd restarts:
    no checked snapshot, no restart. A member without the job yet (deployed before it
    existed) restarts without, saying so."""
    service = f"{SNAPSHOT_JOB}.service"
    if not host.run_shell_command(f"systemctl cat {service} >/dev/null 2>&1")[0]:
        host.log(f"no {service} yet: restarting etcd without a snapshot first")
        return
    ok, output = host.run_shell_command(f"systemctl start {service}")
    if (
        not ok
        and host.run_shell_command(
            f"[ $(systemctl show -p ExecMainStatus --value {service}) = {CGROUP_SETUP_FAILED} ]"
        )[0]
    ):
        # systemd could not set up the job's cgroup: it never ran. Once more.
        ok, output = host.run_shell_command(f"systemctl start {service}")
    if not ok:
        raise RestartError(
            f"{host.name}: not restarting etcd: its snapshot before the restart failed "
            f"({clean(output.stderr.strip()) or 'see journalctl -u ' + service})"
        )


def _hand_off_leadership(host: Host, own: str, others: Sequence[str]) -> None:
    """If this member leads, move leadership to another so writes do not wait for an election."""
    if not others:
        return
    ok, output = host.run_shell_command(
        etcdctl_command([own, *others], "endpoint", "status", "-w", "json") + " 2>/dev/null"
    )
    if not ok:
        return
    statuses = json.loads(output.stdout or "[]")
    by_endpoint = {s["Endpoint"]: s["Status"] for s in statuses}
    mine = by_endpoint.get(own)
    if not mine or mine["leader"] != mine["header"]["member_id"]:
        return
    successor = by_endpoint.get(others[0])
    if successor:
        host.log("moving etcd leadership to another member before the restart")
        host.run_shell_command(
            etcdctl_command([own], "move-leader", format(successor["header"]["member_id"], "x"))
        )
