"""`galley report`: the fleet's state in one parallel pass, as tables and a list of problems.

Gathering connects to every host of an inventory at once (one pyinfra State) and reads the
`galley.facts` each host needs concurrently. Everything after that is pure: `analyse` turns the
facts into tables (a row per host and item, rows with a problem marked) and problems; `render`
and `as_json` print them.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pyinfra.api import Inventory

from galley.components import HOST_FIREWALL, named, opened_on, running_on
from galley.components.api_proxy import API_PROXY
from galley.components.etcd import SNAPSHOT_DIR, SNAPSHOT_INTERVAL
from galley.components.host_firewall import digest, rules_text
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.components.kubernetes import node_name, operator_api_urls
from galley.components.model import Component, first_run_seconds
from galley.etcd.layout import SNAPSHOT_JOB
from galley.etcd.snapshot import snapshot_prefix
from galley.facts import (
    ApiProxyBackends,
    Certificates,
    ComponentVersions,
    EtcdHealth,
    EtcdSnapshots,
    FlannelLease,
    HostFirewall,
    OsInfo,
    RenewalStatus,
    UnitStates,
)
from galley.facts.together import FactError, read_together
from galley.journal import operator_dir
from galley.ops.admin import AdminFiles
from galley.ops.kubeapi import ApiError, KubeApi, node_health
from galley.problems import Problem
from galley.settings import span_seconds
from galley.text import clean
from galley.versions import VersionError, skew_problems

# Hosts renew a certificate with a third of its lifetime left; one with less than a sixth left
# has missed its renewals for half of that window (a 48 h one 8 h, a 30-day one 5 days).
MISSED_RENEWALS_LEFT = 1 / 6
CONNECT_TIMEOUT = 5
# A member's first scheduled snapshot may take this long after the timer's first due time.
SNAPSHOT_GRACE = timedelta(minutes=5)

HostFacts = dict[str, Any]


def fleet_problem(host: str | None, concern: str, message: str) -> Problem:
    """A problem of the fleet report: ``concern`` is the table it shows in."""
    return Problem(host, concern, message, scope="fleet")


@dataclass
class Table:
    """One concern: a header and rows of cells; ``flagged`` holds the indexes of bad rows."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    flagged: set[int] = field(default_factory=set)

    def add(self, cells: Iterable[Any], problem: bool = False) -> None:
        if problem:
            self.flagged.add(len(self.rows))
        self.rows.append(tuple("-" if cell is None else clean(str(cell)) for cell in cells))


@dataclass
class Report:
    """The analysed fleet: one table per concern and every problem found."""

    tables: list[Table]
    problems: list[Problem]


def releases_of(components: Iterable[Component]) -> dict[str, str | None]:
    """The releases ``components`` run, each with the unit that runs its binary (None for a
    release no unit runs, e.g. the CNI plugins)."""
    found: dict[str, str | None] = {}
    for component in components:
        for index, artifact in enumerate(component.artifacts):
            unit = component.unit.name if component.unit and index == 0 else None
            found[artifact.release] = unit
    return found


def units_of(components: Iterable[Component]) -> dict[str, str | None]:
    """The systemd units ``components`` run, each with the release whose binary it runs (None
    for a Debian package's)."""
    return {
        c.unit.name: c.artifacts[0].release if c.artifacts else None for c in components if c.unit
    }


def _components(facts: HostFacts) -> list[Component]:
    """The components a host runs, as `gather` recorded them."""
    return named(facts.get("components", ()))


def analyse(
    hosts: Mapping[str, HostFacts], days: int | None = None, now: datetime | None = None
) -> Report:
    """Tables and problems from each host's facts (``gather``'s result, or the same shape).

    A host's dict has ``groups``, ``components`` (the names of those it runs) and ``error``
    (why it could not be reached, else None) and,
    when reached, the fact values ``os``, ``flannel``, ``certificates``, ``units``,
    ``versions``, ``etcd``, ``api_proxy``, ``renewal`` and ``snapshots`` with
    ``snapshot_interval`` (seconds) (the last six only for hosts running the component or
    holding certificates), and ``firewall`` with ``firewall_wanted`` (the sha256 of the rules
    the inventory gives the host) where the host firewall runs; a kubelet host's ``node`` is
    its Node as the API shows it (`node_health`), reached or not. A certificate is flagged
    with less than `MISSED_RENEWALS_LEFT` of its lifetime left, or within ``days`` when given.
    """
    now = now or datetime.now(UTC)
    problems: list[Problem] = []
    tables = [
        _hosts_table(hosts, problems),
        _versions_table(hosts, problems),
        _units_table(hosts, now, problems),
        _certificates_table(hosts, days, now, problems),
        _renewal_table(hosts, problems),
        _etcd_table(hosts, problems),
        _snapshots_table(hosts, now, problems),
        _api_proxies_table(hosts, problems),
        _firewall_table(hosts, problems),
        _nodes_table(hosts, now, problems),
    ]
    return Report(tables, problems)


def _reached(hosts: Mapping[str, HostFacts]) -> list[tuple[str, HostFacts]]:
    return [(name, facts) for name, facts in sorted(hosts.items()) if facts.get("error") is None]


def _hosts_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("hosts", ("host", "groups", "os", "kernel", "flannel subnet", "status"))
    for name, facts in sorted(hosts.items()):
        groups = ",".join(facts.get("groups", ()))
        if facts.get("error") is not None:
            problems.append(fleet_problem(name, "hosts", f"unreachable: {facts['error']}"))
            table.add((name, groups, None, None, None, f"UNREACHABLE: {facts['error']}"), True)
            continue
        os_info = facts.get("os") or {}
        lease = facts.get("flannel") or {}
        os_name, kernel = os_info.get("pretty_name"), os_info.get("kernel")
        failed = facts.get("fact_errors") or {}
        for key, error in sorted(failed.items()):
            problems.append(fleet_problem(name, "hosts", f"facts failed: {key}: {error}"))
        status = f"FACTS FAILED: {', '.join(sorted(failed))}" if failed else "ok"
        table.add((name, groups, os_name, kernel, lease.get("subnet"), status), bool(failed))
    return table


def _deployed(facts: HostFacts, release: str, unit: str | None) -> bool:
    version = facts.get("versions", {}).get(release, {})
    state = facts.get("units", {}).get(unit, {}) if unit else {}
    return bool(version.get("installed")) or state.get("load", "not-found") != "not-found"


def _effective(facts: HostFacts, release: str) -> str | None:
    """The version a host runs of ``release`` (or would run after a restart)."""
    version = facts.get("versions", {}).get(release, {})
    return version.get("running") or version.get("current")


def _node_skew(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> set[tuple[str, str]]:
    """kubelets and kube-proxies outside the skew policy against the apiservers' versions."""
    apiservers = {
        name: version
        for name, facts in _reached(hosts)
        if (version := _effective(facts, KUBE_APISERVER.artifacts[0].release))
    }
    flagged: set[tuple[str, str]] = set()
    if not apiservers:
        return flagged
    for name, facts in _reached(hosts):
        for component in (KUBELET, KUBE_PROXY):
            release = component.artifacts[0].release
            version = _effective(facts, release)
            if not version:
                continue
            try:
                found = skew_problems(version, apiservers, component.name)
            except VersionError as exc:
                found = [f"{component.name}: {exc}"]
            for message in found:
                problems.append(fleet_problem(name, "versions", message))
                flagged.add((name, release))
    return flagged


def _versions_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("versions", ("host", "component", "installed", "current", "running"))
    # release -> host -> the version it runs (or would run after a restart)
    effective: dict[str, dict[str, str | None]] = {}
    for name, facts in _reached(hosts):
        for release, unit in releases_of(_components(facts)).items():
            if _deployed(facts, release, unit):
                effective.setdefault(release, {})[name] = _effective(facts, release)
    odd: set[tuple[str, str]] = set()
    for release, by_host in effective.items():
        counts = Counter(by_host.values())
        if len(counts) < 2:
            continue
        top = counts.most_common()
        tie = top[0][1] == top[1][1]
        odd |= {(h, release) for h, v in by_host.items() if tie or v != top[0][0]}
        spread = "; ".join(
            f"{v or 'none'} on {', '.join(sorted(h for h, x in by_host.items() if x == v))}"
            for v, _ in top
        )
        problems.append(fleet_problem(None, "versions", f"{release} version skew: {spread}"))
    odd |= _node_skew(hosts, problems)
    for name, facts in _reached(hosts):
        for release, unit in releases_of(_components(facts)).items():
            if not _deployed(facts, release, unit):
                continue
            version = facts.get("versions", {}).get(release, {})
            running, current = version.get("running"), version.get("current")
            stale = running is not None and current is not None and running != current
            if stale:
                problems.append(
                    fleet_problem(
                        name,
                        "versions",
                        f"{release} runs {running} but {current} is current (restart pending)",
                    )
                )
            table.add(
                (name, release, ",".join(version.get("installed", ())) or None, current, running),
                stale or (name, release) in odd,
            )
    return table


# A unit stopping or starting for this long is stuck, not restarting (flanneld takes about 1 s
# to stop; systemd's default stop timeout is 90 s).
RESTART_GRACE = timedelta(seconds=30)


def _restarting(unit: Mapping[str, Any], now: datetime) -> bool:
    """Whether ``unit`` (a UnitStates value) is in the middle of a restart: stopping or starting
    since less than RESTART_GRACE, and not waiting to be started again after a crash."""
    changed = unit.get("changed")
    return (
        unit.get("active") in ("activating", "deactivating", "reloading")
        and unit.get("sub") != "auto-restart"
        and isinstance(changed, datetime)
        and now - changed < RESTART_GRACE
    )


def _units_table(hosts: Mapping[str, HostFacts], now: datetime, problems: list[Problem]) -> Table:
    table = Table("units", ("host", "unit", "load", "state", "since", "restarts"))
    for name, facts in _reached(hosts):
        for component, release in units_of(_components(facts)).items():
            if not _deployed(facts, release, component):
                continue
            unit = facts.get("units", {}).get(component, {})
            load, active = unit.get("load", "not-found"), unit.get("active", "inactive")
            bad = load != "loaded" or (active != "active" and not _restarting(unit, now))
            if bad:
                problems.append(fleet_problem(name, "units", f"{component}: {load}, {active}"))
            since = unit.get("since")
            table.add(
                (
                    name,
                    component,
                    load,
                    f"{active}/{unit.get('sub', '-')}",
                    since.strftime("%Y-%m-%d %H:%M:%S") if isinstance(since, datetime) else since,
                    unit.get("restarts"),
                ),
                bad,
            )
    return table


def _certificates_table(
    hosts: Mapping[str, HostFacts], days: int | None, now: datetime, problems: list[Problem]
) -> Table:
    table = Table(
        "certificates", ("host", "path", "subject", "not after", "days left", "next renewal")
    )
    for name, facts in _reached(hosts):
        due = (facts.get("renewal") or {}).get("next_renewal") or {}
        for path, cert in sorted((facts.get("certificates") or {}).items()):
            if "error" in cert:
                problems.append(fleet_problem(name, "certificates", f"{path}: {cert['error']}"))
                table.add((name, path, cert["error"], None, None, None), True)
                continue
            not_after = cert["not_after"]
            left = not_after - now
            if days is None:
                expiring = left <= (not_after - cert["not_before"]) * MISSED_RENEWALS_LEFT
            else:
                expiring = left <= timedelta(days=days)
            if expiring:
                when = "expired" if left.total_seconds() <= 0 else f"expires in {_duration(left)}"
                problems.append(
                    fleet_problem(name, "certificates", f"{path} ({cert.get('cn')}) {when}")
                )
            cells = (name, path, cert.get("cn"), not_after.strftime("%Y-%m-%d %H:%M"), left.days)
            table.add((*cells, due.get(path)), expiring)
    return table


def _renewal_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    """Each host's own certificate renewal: its last run, and since when it fails."""
    table = Table("renewal", ("host", "status", "last run", "failing since", "error"))
    for name, facts in _reached(hosts):
        if "renewal" not in facts:
            continue
        state = facts["renewal"]
        if state is None:
            table.add((name, "never ran", None, None, None))
            continue
        failing = state.get("status") != "ok"
        if failing:
            problems.append(
                fleet_problem(
                    name,
                    "renewal",
                    f"renewal failing since {state.get('failing_since')}: {state.get('error')}",
                )
            )
        cells = (state.get("status"), state.get("checked"), state.get("failing_since"))
        table.add((name, *cells, state.get("error")), failing)
    return table


def _duration(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days}d"
    hours, rest = divmod(int(delta.total_seconds()), 3600)
    return f"{hours}h{rest // 60:02d}m"


def _etcd_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table(
        "etcd", ("host", "member", "health", "leader", "db size", "raft term", "version", "error")
    )
    leaders: dict[str, list[str]] = {}
    for name, facts in _reached(hosts):
        health = facts.get("etcd")
        if health is None:
            continue
        healthy = bool(health.get("healthy"))
        if not healthy:
            problems.append(fleet_problem(name, "etcd", f"unhealthy: {health.get('error')}"))
        if health.get("leader"):
            leaders.setdefault(health["leader"], []).append(name)
        db_size = health.get("db_size")
        table.add(
            (
                name,
                health.get("member_id"),
                "healthy" if healthy else "UNHEALTHY",
                "yes" if health.get("is_leader") else "no",
                _size(db_size) if isinstance(db_size, int) else None,
                health.get("raft_term"),
                health.get("version"),
                health.get("error"),
            ),
            not healthy,
        )
    if len(leaders) > 1:
        seen = "; ".join(f"{lead} by {', '.join(names)}" for lead, names in leaders.items())
        problems.append(fleet_problem(None, "etcd", f"members disagree on the leader: {seen}"))
    elif table.rows and not leaders:
        problems.append(fleet_problem(None, "etcd", "no member knows a leader"))
    return table


def snapshot_problem(snapshots: Mapping[str, Any], interval: int, now: datetime) -> str | None:
    """What is wrong with a member's scheduled snapshots (`EtcdSnapshots`), taken every
    ``interval`` seconds: a newest one older than twice the interval, none once the timer's
    first run is due (plus `SNAPSHOT_GRACE`), or a timer that is not active."""
    newest, since = snapshots.get("newest_time"), snapshots.get("timer_since")
    if newest is not None and now - newest > timedelta(seconds=2 * interval):
        return f"newest etcd snapshot is {_duration(now - newest)} old (every {interval}s)"
    if snapshots.get("timer") != "active":
        return f"the snapshot timer is {snapshots.get('timer') or 'missing'}"
    if newest is None and since is not None:
        due = since + timedelta(seconds=first_run_seconds(f"{interval}s")) + SNAPSHOT_GRACE
        if now > due:
            return f"no etcd snapshot since the timer started at {since:%Y-%m-%d %H:%M:%S}"
    return None


def _snapshots_table(
    hosts: Mapping[str, HostFacts], now: datetime, problems: list[Problem]
) -> Table:
    """Each member's scheduled snapshots: how many, the newest and its age, the last run."""
    table = Table("etcd snapshots", ("host", "count", "newest", "age", "size", "timer", "last run"))
    for name, facts in _reached(hosts):
        snapshots = facts.get("snapshots")
        if snapshots is None:
            continue
        problem = snapshot_problem(snapshots, facts.get("snapshot_interval") or 3600, now)
        if problem:
            problems.append(fleet_problem(name, "etcd snapshots", problem))
        newest, size = snapshots.get("newest_time"), snapshots.get("newest_size")
        cells = (
            snapshots.get("count"),
            snapshots.get("newest"),
            _duration(now - newest) if newest else None,
            _size(size) if isinstance(size, int) else None,
        )
        table.add(
            (name, *cells, snapshots.get("timer"), snapshots.get("last_result")), bool(problem)
        )
    return table


def _api_proxies_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("api proxies", ("host", "apiserver", "address", "status", "last check"))
    for name, facts in _reached(hosts):
        for server, seen in sorted((facts.get("api_proxy") or {}).items()):
            up = seen.get("status") == "UP"
            if not up:
                problems.append(
                    fleet_problem(
                        name, "api proxies", f"sees apiserver {server} {seen.get('status')}"
                    )
                )
            table.add(
                (name, server, seen.get("address"), seen.get("status"), seen.get("check")), not up
            )
    return table


def _firewall_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    """Each host's firewall: the rules it keeps, whether they are the inventory's, whether
    the live table is still those rules."""
    table = Table("host firewall", ("host", "kept rules", "inventory's", "live table"))
    for name, facts in _reached(hosts):
        if "firewall" not in facts:
            continue
        found = facts["firewall"]
        kept = found.get("kept")
        current = kept == facts.get("firewall_wanted")
        live = "missing" if not found.get("table") else "drift" if found.get("drift") else "kept"
        why = None
        if kept is None:
            why = "no rules kept yet (deploy)"
        elif not current:
            why = "kept rules are not the inventory's (deploy)"
        elif live != "kept":
            why = f"live table {live}: it is not the kept rules (changed by hand?)"
        if why:
            problems.append(fleet_problem(name, "host firewall", why))
        table.add((name, kept and kept[:12], "yes" if current else "no", live), why is not None)
    return table


def _node_problem(node: Mapping[str, Any], now: datetime) -> str | None:
    """What is wrong with a worker's Node as the API shows it (`node_health`), if anything."""
    if node.get("error"):
        return f"not read: {node['error']}"
    if not node.get("registered"):
        return "no Node object (its kubelet never registered)"
    heartbeat, lease = node.get("heartbeat"), node.get("lease_seconds")
    stale = isinstance(heartbeat, datetime) and lease and now - heartbeat > timedelta(seconds=lease)
    # A kubelet just restarted (e.g. by a certificate renewal) may post NotReady for a few
    # seconds while it heartbeats: like a unit mid-restart, that is no problem yet.
    since = node.get("since")
    settling = not stale and isinstance(since, datetime) and now - since < RESTART_GRACE
    if node.get("ready") != "True" and not settling:
        return f"not Ready ({node.get('ready')}: {node.get('reason') or 'no reason given'})"
    if stale:
        return f"no heartbeat for {int((now - heartbeat).total_seconds())}s (lease {lease}s)"
    if node.get("pressure"):
        return " and ".join(node["pressure"])
    return None


def _nodes_table(hosts: Mapping[str, HostFacts], now: datetime, problems: list[Problem]) -> Table:
    """Each worker's Node, read through the API: Ready, the heartbeat's age, pressures."""
    table = Table("nodes", ("host", "ready", "heartbeat", "pressure", "cordoned"))
    for name, facts in sorted(hosts.items()):
        node = facts.get("node")
        if node is None:
            continue
        why = _node_problem(node, now)
        if why:
            problems.append(fleet_problem(name, "node", why))
        heartbeat = node.get("heartbeat")
        age = f"{int((now - heartbeat).total_seconds())}s ago" if heartbeat else None
        cells = (name, node.get("ready"), age, ",".join(node.get("pressure") or ()) or None)
        table.add((*cells, "yes" if node.get("cordoned") else None), why is not None)
    return table


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size} {unit}"
        size //= 1024
    return f"{size} GiB"


RED, BOLD, RESET = "\033[31m", "\033[1m", "\033[0m"


def render(report: Report, color: bool) -> str:
    """The tables (rows with a problem marked "!", red with ``color``) and a summary."""
    out: list[str] = []
    for table in report.tables:
        out.append(f"{BOLD}{table.title}{RESET}" if color else table.title)
        if not table.rows:
            out += ["  (nothing)", ""]
            continue
        cells = [table.header, *table.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
        for index, row in enumerate(cells):
            mark = "!" if index - 1 in table.flagged else " "
            line = f"{mark} " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            line = line.rstrip()
            if color and mark == "!":
                line = f"{RED}{line}{RESET}"
            out.append(line)
        out.append("")
    if report.problems:
        out.append(f"{len(report.problems)} problem(s):")
        lines = [clean(str(problem)) for problem in report.problems]
        out += [f"  {RED}{line}{RESET}" if color else f"  {line}" for line in lines]
    else:
        out.append("no problems")
    return "\n".join(out)


def as_json(hosts: Mapping[str, HostFacts], report: Report, days: int | None) -> str:
    """One JSON document: every host's facts, the problems and the options used."""
    document = {
        "days": days,
        "hosts": hosts,
        "problems": [
            {"host": p.host, "concern": p.field, "message": p.message} for p in report.problems
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def gather(inventory: Any, connect_timeout: int = CONNECT_TIMEOUT) -> dict[str, HostFacts]:
    """Connect to every host of a pyinfra ``Inventory`` and read its facts, and read the Nodes
    from the API, all concurrently (a dead host's timeouts are waited out once)."""
    import gevent
    from pyinfra.api import Config, State
    from pyinfra.api.exceptions import ConnectError

    hosts = list(inventory)
    state = State(inventory, Config(CONNECT_TIMEOUT=connect_timeout, PARALLEL=len(hosts) or 1))

    def facts_of(host: Any) -> HostFacts:
        components = running_on(host)
        facts: HostFacts = {
            "groups": sorted(host.groups),
            "components": [c.name for c in components],
            "error": None,
        }
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as exc:
            facts["error"] = clean(str(exc.args[0] if exc.args else exc))
            return facts
        state.activate_host(host)
        wanted: dict[str, tuple[Any, dict[str, Any]]] = {
            "os": (OsInfo, {}),
            "flannel": (FlannelLease, {}),
        }
        certificates = sorted({c.cert_path for one in components for c in one.certs_of(host)})
        if certificates:
            wanted["certificates"] = (Certificates, {"paths": " ".join(certificates)})
        if units := units_of(components):
            wanted["units"] = (UnitStates, {"units": list(units)})
        if releases := releases_of(components):
            entries = [f"{release}:{unit or ''}" for release, unit in releases.items()]
            wanted["versions"] = (ComponentVersions, {"components": entries})
        if "etcd" in host.groups:
            wanted["etcd"] = (EtcdHealth, {})
            arguments = {
                "directory": SNAPSHOT_DIR.of(host.data),
                "prefix": snapshot_prefix(host.data.cluster_name),
                "job": SNAPSHOT_JOB,
            }
            wanted["snapshots"] = (EtcdSnapshots, arguments)
            facts["snapshot_interval"] = span_seconds(SNAPSHOT_INTERVAL.of(host.data))
        if API_PROXY in components:
            wanted["api_proxy"] = (ApiProxyBackends, {})
        if certificates:
            wanted["renewal"] = (RenewalStatus, {})
        if HOST_FIREWALL in components:
            wanted["firewall"] = (HostFirewall, {})
            facts["firewall_wanted"] = digest(rules_text(host, opened_on(host)))
        for key, value in read_together(host, wanted).items():
            if isinstance(value, FactError):  # one fact must not hide the rest of the fleet
                facts.setdefault("fact_errors", {})[key] = clean(str(value))
            else:
                facts[key] = value
        host.disconnect()
        return facts

    nodes = gevent.spawn(_nodes, inventory)
    jobs = {host.name: state.pool.spawn(facts_of, host) for host in hosts}
    gevent.joinall([*jobs.values(), nodes])
    found = {name: job.get() for name, job in jobs.items()}
    for name, node in nodes.get().items():
        found[name]["node"] = node
    return found


def _nodes(inventory: Inventory) -> dict[str, dict[str, Any]]:
    """Each kubelet host's Node and heartbeat as the API shows them (`node_health`), read
    with the operator's admin credentials; ``{"error": ...}`` each when they cannot be read."""
    names = {host.name: node_name(host) for host in inventory if KUBELET in running_on(host)}
    if not names:
        return {}
    files = AdminFiles(operator_dir(next(iter(inventory)).data))
    try:
        if not files.kubeconfig.exists():
            raise ApiError(
                0, f"no admin credentials in {files.directory} (galley admin credentials)"
            )
        api = KubeApi(operator_api_urls(inventory), files, timeout=CONNECT_TIMEOUT)
        nodes = {n["metadata"]["name"]: n for n in api.nodes()}
        leases = {lease["metadata"]["name"]: lease for lease in api.node_leases()}
    except (ApiError, OSError) as exc:
        return {name: {"error": clean(str(exc))} for name in names}
    return {host: node_health(nodes.get(name), leases.get(name)) for host, name in names.items()}


def report_cli(inventory: Inventory, days: int | None = None, json_output: bool = False) -> int:
    """`galley report`: print the report; 0 without problems, 1 with."""
    hosts = gather(inventory)
    report = analyse(hosts, days)
    if json_output:
        print(as_json(hosts, report, days))
    else:
        print(render(report, color=sys.stdout.isatty()))
    return 1 if report.problems else 0
