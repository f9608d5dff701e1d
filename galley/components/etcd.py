"""etcd: the cluster's store, on the ``etcd`` group, with Vault-signed TLS for clients and peers.

Peers come from the inventory (member name = host name, private IP). etcd reads its whole
configuration from environment files: ``etcd.env`` (everything but the bootstrap; a change
restarts the member) and ``bootstrap.env`` (``initial-cluster*``, which etcd reads only with
an empty data dir, so a change there restarts nothing). `bootstrap_settings` never claims a
state the member is not in; a host with an empty data dir beside a running cluster joins it
before its first start (`_join`: learner, start, promote; `galley.ops.etcd_members`).
Restarts are durable and rolling: a member restarts when the files it runs from are newer
than its start, one member at a time, each only while every other member is healthy,
leadership handed off first, and the next only once the cluster is healthy again.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

from pyinfra import inventory, logger
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import server

from galley import cluster_identity, cluster_secrets
from galley.components.engine import render, render_text
from galley.components.model import (
    Cert,
    Component,
    Config,
    Configured,
    Directory,
    KvSecret,
    Timer,
    Unit,
    first_run_seconds,
    github_artifact,
)
from galley.etcdctl import CACERT, ETCDUTL, etcdctl_command
from galley.facts.etcd import (
    EtcdClusterIdentity,
    EtcdDataDir,
    EtcdLocalMemberId,
    EtcdMembers,
)
from galley.host.restarts import RestartError, systemctl_restart, wait_until_healthy
from galley.ops.etcd_client import EtcdClient, host_runner
from galley.ops.etcd_members import Membership
from galley.ops.etcd_plan import Member, Wanted, unlisted_note
from galley.ops.etcd_snapshot import HOST_WORK_DIR, TIME_FORMAT, snapshot_prefix
from galley.ops.journal import operator_dir
from galley.pki import Identity, RoleSpec
from galley.problems import PreflightError
from galley.text import clean

CONFIG_DIR = "/etc/etcd"
ENV_PATH = f"{CONFIG_DIR}/etcd.env"
BOOTSTRAP_PATH = f"{CONFIG_DIR}/bootstrap.env"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/etcd"
# The members' scheduled snapshots: the timer's job, its script, and its group data.
SNAPSHOT_JOB = "galley-etcd-snapshot"
SNAPSHOT_SCRIPT = f"/usr/local/sbin/{SNAPSHOT_JOB}"
SNAPSHOT_DIR_KEY = "etcd_snapshot_dir"
SNAPSHOT_DEFAULTS: dict[str, Any] = {
    "etcd_snapshot_interval": "1h",  # a systemd time span
    "etcd_snapshot_keep": 24,  # the newest this many are kept
    SNAPSHOT_DIR_KEY: "/var/lib/etcd-snapshots",  # owned by etcd, 0700; files 0600
}
SNAPSHOT_SAVE_TIMEOUT = "5m"
# systemd's exit status when it could not put a job's process in its cgroup (219/CGROUP).
CGROUP_SETUP_FAILED = 219
# The membership journal, in the operator's directory of the cluster.
MEMBERSHIP_JOURNAL = "etcd-membership.json"
HEALTHCHECK_CLIENT = "etcd-healthcheck-client"
HEALTH_TIMEOUT = 60.0

# Which cluster this etcd is (`galley.cluster_identity`): made by the Vault bootstrap, written
# into etcd once by the deploy, read back from snapshots by a restore.
CLUSTER_IDENTITY = KvSecret("galley/cluster-identity", cluster_identity.new_identity)

# etcd server and peer certificate: CN = host name; SANs host name, localhost, IPs.
MEMBER_ROLE = RoleSpec(
    "etcd-member",
    "etcd",
    ("{cluster}-*",),
    server=True,
    glob_names=True,
    localhost=True,
    ip_sans=True,
)


def member_name(member: Host) -> str:
    """The etcd member name of an inventory host (its host name unless ``etcd_name`` is set)."""
    return member.data.get("etcd_name") or member.name


def members() -> list[Host]:
    """The hosts of the ``etcd`` group, in inventory order."""
    return list(inventory.get_group("etcd", []))


def wanted(member: Host) -> Wanted:
    """An inventory host as the membership planner sees it: name, peer and client URL."""
    data = member.data
    return Wanted(
        member_name(member),
        f"https://{data.private_ip}:{data.etcd_peer_port}",
        f"https://{data.private_ip}:{data.etcd_client_port}",
    )


def member_identity(host_name: str, private_ip: str) -> Identity:
    """An etcd member's identity: CN host name, SANs host name, localhost and its IPs."""
    return Identity(host_name, (host_name, "localhost"), (private_ip, "127.0.0.1"))


def initial_cluster(hosts: Sequence[Host]) -> str:
    """etcd's ``initial-cluster`` value: ``name=https://ip:peer_port`` for every member."""
    return ",".join(f"{w.name}={w.peer_url}" for w in map(wanted, hosts))


def client_endpoints(hosts: Sequence[Host]) -> list[str]:
    """The client URLs of all members (each member's own port)."""
    return [wanted(h).client_url for h in hosts]


def client_role(cn: str) -> RoleSpec:
    """The role of one etcd client identity: it signs exactly ``cn`` (no other names, no IP
    SANs), so a token for one client cannot get another's identity."""
    return RoleSpec(cn, "etcd", (cn,))


def etcd_client_cert(
    stem: str, cn: str, directory: str, ca_path: str, when=lambda host: True, reloaded=False
) -> Cert:
    """An etcd client certificate with the identity ``cn`` (its own role)."""
    return Cert(
        stem,
        directory,
        "etcd",
        client_role(cn),
        lambda host: Identity(cn),
        ca_path,
        when=when,
        reloaded=reloaded,
    )


def _member_cert(stem: str, role: RoleSpec, identity) -> Cert:
    # etcd loads its certificate and key again for every TLS handshake (client and peer), and
    # never reads the health check client's: renewing either needs no restart.
    return Cert(
        stem,
        PKI_DIR,
        "etcd",
        role,
        identity,
        CACERT,
        "etcd",
        "etcd",
        "etcd_cert_ttl",
        reloaded=True,
    )


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


def member_variables(host: Host) -> dict[str, Any]:
    """The variables of etcd.env and the unit for ``host``."""
    data = host.data
    return {
        "cluster_name": data.cluster_name,
        "member_name": member_name(host),
        "private_ip": data.private_ip,
        "client_port": data.etcd_client_port,
        "peer_port": data.etcd_peer_port,
        "metrics_port": data.etcd_metrics_port,
        "data_dir": DATA_DIR,
        "pki_dir": PKI_DIR,
        "env_path": ENV_PATH,
        "bootstrap_path": BOOTSTRAP_PATH,
    }


def snapshot_settings(data: Any) -> dict[str, Any]:
    """The scheduled snapshots' group data (`SNAPSHOT_DEFAULTS` where unset)."""
    return {key: data.get(key) or default for key, default in SNAPSHOT_DEFAULTS.items()}


def snapshot_variables(host: Host) -> dict[str, Any]:
    """The variables of the scheduled snapshot's script, service and timer for ``host``:
    the member snapshots itself (its own client port) into ``etcd_snapshot_dir`` every
    ``etcd_snapshot_interval``, keeping the newest ``etcd_snapshot_keep``."""
    data = host.data
    settings = snapshot_settings(data)
    interval = settings["etcd_snapshot_interval"]
    etcdctl = etcdctl_command(
        [f"https://127.0.0.1:{data.etcd_client_port}"], command_timeout=SNAPSHOT_SAVE_TIMEOUT
    )
    return {
        "member_name": member_name(host),
        "script_path": SNAPSHOT_SCRIPT,
        "snapshot_dir": settings[SNAPSHOT_DIR_KEY],
        "keep": settings["etcd_snapshot_keep"],
        "interval": interval,
        "first_run": f"{first_run_seconds(interval)}s",
        "shell": {
            "dir": shlex.quote(settings[SNAPSHOT_DIR_KEY]),
            "prefix": shlex.quote(snapshot_prefix(data.cluster_name)),
            "etcdctl": etcdctl,
            "etcdutl": shlex.quote(ETCDUTL),
            "date_format": shlex.quote(f"+{TIME_FORMAT}"),
        },
    }


def bootstrap_variables(host: Host, state: str, cluster: str) -> dict[str, Any]:
    """The variables of bootstrap.env (the deploy's and a joining member's, alike)."""
    return {
        "cluster_name": host.data.cluster_name,
        "initial_cluster": cluster,
        "initial_cluster_state": state,
    }


def _data_dir(host: Host) -> dict[str, Any]:
    return host.get_fact(EtcdDataDir, data_dir=DATA_DIR, bootstrap_env=BOOTSTRAP_PATH)


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    own = _data_dir(host)
    identity = _identity(host, context)
    if not own["empty"]:
        view = _cluster_view(host.state)
        live = view.members if view else None
        _note_unlisted(host, live)
        _refuse_removed_member(host, live)
        if view is not None and view.reader.name == host.name:
            _keep_identity(host, view, identity)
    exists = own["empty"] and any(
        not _data_dir(other)["empty"] for other in members() if other != host
    )
    settings = bootstrap_settings(initial_cluster(members()), own, exists)
    variables = member_variables(host)
    files = {ENV_PATH: render(ETCD.config(ENV_PATH), **variables)}
    if settings is not None:
        files[BOOTSTRAP_PATH] = render(
            ETCD.config(BOOTSTRAP_PATH), **bootstrap_variables(host, *settings)
        )
    return Configured(files, variables, before_start=settings is None)


def _live_members(host: Host) -> list[Member] | None:
    """The member list as ``host``'s own etcd reports it (None when it does not answer)."""
    endpoint = f"https://127.0.0.1:{host.data.etcd_client_port}"
    found = host.get_fact(EtcdMembers, endpoint=endpoint)["members"]
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
    the members and the cluster identity etcd holds (`EtcdClusterIdentity`'s value)."""

    reader: Host
    members: list[Member]
    identity: Mapping[str, Any]


_views: WeakKeyDictionary[State, _ClusterView | None] = WeakKeyDictionary()
# pyinfra prepares hosts concurrently (gevent): the first reads the view, the others wait.
_viewing = threading.Lock()


def _cluster_view(state: State) -> _ClusterView | None:
    """The cluster as the first etcd host with member data whose etcd answers sees it (None
    when none does: then nothing is decided from it)."""
    with _viewing:
        if state not in _views:
            _views[state] = _read_view()
    return _views[state]


def _read_view() -> _ClusterView | None:
    for member in members():
        if _data_dir(member)["empty"]:
            continue
        found = _live_members(member)
        if found is not None:
            return _ClusterView(member, found, _identity_in_etcd(member))
    return None


def _identity_in_etcd(host: Host) -> Mapping[str, Any]:
    """The cluster identity ``host``'s own etcd holds (`EtcdClusterIdentity`)."""
    endpoint = f"https://127.0.0.1:{host.data.etcd_client_port}"
    return host.get_fact(EtcdClusterIdentity, endpoint=endpoint)


# Per run: the cluster identity Vault's KV store holds (what etcd must say).
_identities: WeakKeyDictionary[State, str] = WeakKeyDictionary()


def _identity(host: Host, context: Mapping[str, Any]) -> str:
    """The cluster's identity from Vault, read once per run."""
    if host.state not in _identities:
        value = cluster_secrets.read(context["vault"](), host.data.cluster_name, CLUSTER_IDENTITY)
        _identities[host.state] = value["id"]
    return _identities[host.state]


def identity_command(host: Host, identity: str) -> str:
    """Write ``identity`` into etcd unless a value is there already (one transaction)."""
    endpoint = f"https://127.0.0.1:{host.data.etcd_client_port}"
    key, value = cluster_identity.KEY, cluster_identity.marker(identity)
    requests = f'create("{key}") = "0"\n\nput {key} {value}\n\n\n'
    return f"printf {shlex.quote(requests)} | {etcdctl_command([endpoint], 'txn')} >/dev/null"


def _keep_identity(host: Host, view: _ClusterView, identity: str) -> None:
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
            f"{cluster_secrets.kv_mount(host.data.cluster_name)}/{CLUSTER_IDENTITY.name} says "
            f"{identity}: check vault_addr and cluster_name; nothing was changed"
        )


# The runs (pyinfra States) whose unlisted members were looked for already: once per run.
_noted: WeakSet[State] = WeakSet()


def _note_unlisted(host: Host, live: list[Member] | None) -> None:
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
    return host.get_fact(EtcdLocalMemberId, unit=ETCD.unit.name if ETCD.unit else "etcd")


def _refuse_removed_member(host: Host, live: list[Member] | None) -> None:
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
    """`galley.ops.etcd_members.MemberHosts` over connected pyinfra hosts (by member name): a
    deploy's etcd group at execution time, or the hosts `galley etcd remove` reached."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.hosts = {member_name(host): host for host in hosts}

    def data_dir_empty(self, name: str) -> bool:
        """Whether the host's data dir holds no member data (unknown, or a host not reached,
        counts as data)."""
        return name in self.hosts and _data_dir(self.hosts[name])["empty"]

    def start_member(self, name: str, initial_cluster: str) -> None:
        """Write bootstrap.env with ``existing`` and ``initial_cluster``, start etcd (not
        waiting for it: the executor polls until it has joined)."""
        target = self.hosts[name]
        text = render_text(
            ETCD.config(BOOTSTRAP_PATH),
            **bootstrap_variables(target, "existing", initial_cluster),
        )
        _run(target, f"{_write_command(BOOTSTRAP_PATH, text)} && systemctl start --no-block etcd")

    def stop_and_wipe(self, name: str) -> None:
        """Stop and disable etcd, empty its data dir."""
        _run(self.hosts[name], f"systemctl disable --now etcd && rm -rf {DATA_DIR}/member")


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


def _join(state: State, host: Host, unit: str) -> None:
    """Before this host's etcd first starts beside a running cluster: reconcile the members
    with the inventory (a replaced droplet's old member removed, then each new host added as
    a learner, started with the list ``member add`` returned and promoted once caught up).
    Hooks run one host at a time; the first does every pending change, the next find none."""
    hosts = members()
    membership = Membership(
        client=EtcdClient(host_runner(host)),
        hosts=PyinfraMemberHosts(hosts),
        journal_path=operator_dir(host.data) / MEMBERSHIP_JOURNAL,
        snapshot_dir=HOST_WORK_DIR,  # on the host running it (0600: every Secret)
        log=host.log,
        timeout=HEALTH_TIMEOUT,
    )
    membership.reconcile([wanted(h) for h in hosts])


def _endpoint_health(host: Host, endpoints: Sequence[str]) -> dict[str, str | None]:
    """Each endpoint's health as seen from ``host``: None when healthy, else the error."""
    _, output = host.run_shell_command(
        etcdctl_command(endpoints, "endpoint", "health", "-w", "json") + " 2>/dev/null"
    )
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


def _wait_cluster_healthy(state: State, host: Host, unit: str) -> None:
    """After the first start: wait until the cluster is healthy, then settle bootstrap.env."""
    endpoints = client_endpoints(members())
    problem = wait_until_healthy(lambda: unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise RestartError(
            f"{host.name}: etcd cluster not healthy after {HEALTH_TIMEOUT:.0f}s: {problem}"
        )
    _run(host, f"{identity_command(host, _identities[state])} && {SETTLE_COMMAND}")


# A bootstrapped member's bootstrap.env says ``existing`` (it has data; etcd no longer reads it).
SETTLE_COMMAND = (
    "sed -i 's/^ETCD_INITIAL_CLUSTER_STATE=new$/ETCD_INITIAL_CLUSTER_STATE=existing/' "
    + BOOTSTRAP_PATH
)


def _restart_member(state: State, host: Host, unit: str) -> None:
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


ETCD = Component(
    name="etcd",
    group="etcd",
    phase="etcd",
    artifacts=(
        github_artifact(
            "etcd",
            "etcd-io/etcd",
            "etcd-v{version}-linux-{arch}.tar.gz",
            "SHA256SUMS",
            ("etcd", "etcdctl", "etcdutl"),
        ),
    ),
    certs=(
        _member_cert(
            "member",
            MEMBER_ROLE,
            lambda host: member_identity(member_name(host), host.data.private_ip),
        ),
        _member_cert(
            "healthcheck-client",
            client_role(HEALTHCHECK_CLIENT),
            lambda host: Identity(HEALTHCHECK_CLIENT),
        ),
    ),
    configs=(
        Config(ENV_PATH, "etcd/etcd.env.j2", mode="640", group="etcd"),
        Config(BOOTSTRAP_PATH, "etcd/bootstrap.env.j2", mode="640", group="etcd", watched=False),
    ),
    unit=Unit(
        "etcd",
        "etcd/etcd.service.j2",
        restart=_restart_member,
        serial=True,
        wait=_wait_cluster_healthy,
        before_start=_join,
    ),
    secrets=(CLUSTER_IDENTITY,),
    timers=(
        Timer(
            SNAPSHOT_JOB,
            Config(SNAPSHOT_SCRIPT, f"etcd/{SNAPSHOT_JOB}.sh.j2", mode="755"),
            f"etcd/{SNAPSHOT_JOB}.service.j2",
            f"etcd/{SNAPSHOT_JOB}.timer.j2",
            snapshot_variables,
        ),
    ),
    directories=(
        Directory(DATA_DIR, "700", "etcd", "etcd"),
        Directory(CONFIG_DIR, "755"),
        Directory(PKI_DIR, "750", "root", "etcd"),
        Directory(
            SNAPSHOT_DEFAULTS[SNAPSHOT_DIR_KEY], "700", "etcd", "etcd", data_key=SNAPSHOT_DIR_KEY
        ),
    ),
    checks=("snapshots",),
    user="etcd",
    user_home=DATA_DIR,
    configure=_configure,
)
