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

from galley.facts import (
    Certificates,
    ComponentVersions,
    EtcdHealth,
    FlannelLease,
    OsInfo,
    UnitStates,
)

# The components each inventory group runs: a galley release and a systemd unit of that name.
GROUP_COMPONENTS: Mapping[str, tuple[str, ...]] = {"etcd": ("etcd",)}
DEFAULT_DAYS = 14
CONNECT_TIMEOUT = 5

HostFacts = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """Something an operator should look at."""

    host: str | None
    concern: str
    message: str

    def __str__(self) -> str:
        return f"{self.host or 'fleet'}: {self.concern}: {self.message}"


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
        self.rows.append(tuple("-" if cell is None else str(cell) for cell in cells))


@dataclass
class Report:
    """The analysed fleet: one table per concern and every problem found."""

    tables: list[Table]
    problems: list[Problem]


def components_of(groups: Iterable[str]) -> tuple[str, ...]:
    """The components a host in ``groups`` runs, in a stable order without repeats."""
    return tuple(dict.fromkeys(c for g in groups for c in GROUP_COMPONENTS.get(g, ())))


def analyse(hosts: Mapping[str, HostFacts], days: int, now: datetime | None = None) -> Report:
    """Tables and problems from each host's facts (``gather``'s result, or the same shape).

    A host's dict has ``groups`` and ``error`` (why it could not be reached, else None) and,
    when reached, the fact values ``os``, ``flannel``, ``certificates``, ``units``,
    ``versions`` and ``etcd`` (the last three only for hosts running the component).
    """
    now = now or datetime.now(UTC)
    problems: list[Problem] = []
    tables = [
        _hosts_table(hosts, problems),
        _versions_table(hosts, problems),
        _units_table(hosts, problems),
        _certificates_table(hosts, days, now, problems),
        _etcd_table(hosts, problems),
    ]
    return Report(tables, problems)


def _reached(hosts: Mapping[str, HostFacts]) -> list[tuple[str, HostFacts]]:
    return [(name, facts) for name, facts in sorted(hosts.items()) if facts.get("error") is None]


def _hosts_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("hosts", ("host", "groups", "os", "kernel", "flannel subnet", "status"))
    for name, facts in sorted(hosts.items()):
        groups = ",".join(facts.get("groups", ()))
        if facts.get("error") is not None:
            problems.append(Problem(name, "hosts", f"unreachable: {facts['error']}"))
            table.add((name, groups, None, None, None, f"UNREACHABLE: {facts['error']}"), True)
            continue
        os_info = facts.get("os") or {}
        lease = facts.get("flannel") or {}
        os_name, kernel = os_info.get("pretty_name"), os_info.get("kernel")
        table.add((name, groups, os_name, kernel, lease.get("subnet"), "ok"))
    return table


def _deployed(facts: HostFacts, component: str) -> bool:
    version = facts.get("versions", {}).get(component, {})
    unit = facts.get("units", {}).get(component, {})
    return bool(version.get("installed")) or unit.get("load", "not-found") != "not-found"


def _versions_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("versions", ("host", "component", "installed", "current", "running"))
    # component -> host -> the version it runs (or would run after a restart)
    effective: dict[str, dict[str, str | None]] = {}
    for name, facts in _reached(hosts):
        for component in components_of(facts.get("groups", ())):
            if _deployed(facts, component):
                version = facts.get("versions", {}).get(component, {})
                effective.setdefault(component, {})[name] = version.get("running") or version.get(
                    "current"
                )
    odd: set[tuple[str, str]] = set()
    for component, by_host in effective.items():
        counts = Counter(by_host.values())
        if len(counts) < 2:
            continue
        top = counts.most_common()
        tie = top[0][1] == top[1][1]
        odd |= {(h, component) for h, v in by_host.items() if tie or v != top[0][0]}
        spread = "; ".join(
            f"{v or 'none'} on {', '.join(sorted(h for h, x in by_host.items() if x == v))}"
            for v, _ in top
        )
        problems.append(Problem(None, "versions", f"{component} version skew: {spread}"))
    for name, facts in _reached(hosts):
        for component in components_of(facts.get("groups", ())):
            if not _deployed(facts, component):
                continue
            version = facts.get("versions", {}).get(component, {})
            running, current = version.get("running"), version.get("current")
            stale = running is not None and current is not None and running != current
            if stale:
                problems.append(
                    Problem(
                        name,
                        "versions",
                        f"{component} runs {running} but {current} is current (restart pending)",
                    )
                )
            table.add(
                (name, component, ",".join(version.get("installed", ())) or None, current, running),
                stale or (name, component) in odd,
            )
    return table


def _units_table(hosts: Mapping[str, HostFacts], problems: list[Problem]) -> Table:
    table = Table("units", ("host", "unit", "load", "state", "since", "restarts"))
    for name, facts in _reached(hosts):
        for component in components_of(facts.get("groups", ())):
            if not _deployed(facts, component):
                continue
            unit = facts.get("units", {}).get(component, {})
            load, active = unit.get("load", "not-found"), unit.get("active", "inactive")
            bad = load != "loaded" or active != "active"
            if bad:
                problems.append(Problem(name, "units", f"{component}: {load}, {active}"))
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
    hosts: Mapping[str, HostFacts], days: int, now: datetime, problems: list[Problem]
) -> Table:
    table = Table("certificates", ("host", "path", "subject", "not after", "days left"))
    horizon = now + timedelta(days=days)
    for name, facts in _reached(hosts):
        for path, cert in sorted((facts.get("certificates") or {}).items()):
            if "error" in cert:
                problems.append(Problem(name, "certificates", f"{path}: {cert['error']}"))
                table.add((name, path, cert["error"], None, None), True)
                continue
            not_after = cert["not_after"]
            expiring = not_after <= horizon
            left = not_after - now
            if expiring:
                when = "expired" if left.total_seconds() <= 0 else f"expires in {_duration(left)}"
                problems.append(Problem(name, "certificates", f"{path} ({cert.get('cn')}) {when}"))
            table.add(
                (name, path, cert.get("cn"), not_after.strftime("%Y-%m-%d %H:%M"), left.days),
                expiring,
            )
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
            problems.append(Problem(name, "etcd", f"unhealthy: {health.get('error')}"))
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
        problems.append(Problem(None, "etcd", f"members disagree on the leader: {seen}"))
    elif table.rows and not leaders:
        problems.append(Problem(None, "etcd", "no member knows a leader"))
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
        out += [f"  {RED}{p}{RESET}" if color else f"  {p}" for p in report.problems]
    else:
        out.append("no problems")
    return "\n".join(out)


def as_json(hosts: Mapping[str, HostFacts], report: Report, days: int) -> str:
    """One JSON document: every host's facts, the problems and the options used."""
    document = {
        "days": days,
        "hosts": hosts,
        "problems": [
            {"host": p.host, "concern": p.concern, "message": p.message} for p in report.problems
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def gather(inventory: Any, connect_timeout: int = CONNECT_TIMEOUT) -> dict[str, HostFacts]:
    """Connect to every host of a pyinfra ``Inventory`` and read its facts, all concurrently."""
    import gevent
    from pyinfra.api import Config, State
    from pyinfra.api.exceptions import ConnectError

    hosts = list(inventory)
    state = State(inventory, Config(CONNECT_TIMEOUT=connect_timeout, PARALLEL=len(hosts) or 1))

    def facts_of(host: Any) -> HostFacts:
        facts: HostFacts = {"groups": sorted(host.groups), "error": None}
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as exc:
            facts["error"] = str(exc.args[0] if exc.args else exc)
            return facts
        state.activate_host(host)
        wanted: dict[str, tuple[Any, dict[str, Any]]] = {
            "os": (OsInfo, {}),
            "flannel": (FlannelLease, {}),
            "certificates": (Certificates, {}),
        }
        components = components_of(host.groups)
        if components:
            wanted["units"] = (UnitStates, {"units": components})
            wanted["versions"] = (ComponentVersions, {"components": components})
        if "etcd" in host.groups:
            wanted["etcd"] = (EtcdHealth, {})
        jobs = {key: gevent.spawn(host.get_fact, cls, **kw) for key, (cls, kw) in wanted.items()}
        gevent.joinall(list(jobs.values()))
        for key, job in jobs.items():
            facts[key] = job.get()
        host.disconnect()
        return facts

    jobs = {host.name: state.pool.spawn(facts_of, host) for host in hosts}
    gevent.joinall(list(jobs.values()))
    return {name: job.get() for name, job in jobs.items()}


def report_cli(inventory_path: str, days: int = DEFAULT_DAYS, json_output: bool = False) -> int:
    """`galley report`: print the report; 0 without problems, 1 with, 2 if unloadable."""
    from galley.validate import load_inventory

    try:
        inventory = load_inventory(inventory_path)
    except Exception as exc:  # any failure while loading user code is reported the same way
        print(f"galley: cannot load {inventory_path}: {exc}", file=sys.stderr)
        return 2
    hosts = gather(inventory)
    report = analyse(hosts, days)
    if json_output:
        print(as_json(hosts, report, days))
    else:
        print(render(report, color=sys.stdout.isatty()))
    return 1 if report.problems else 0
