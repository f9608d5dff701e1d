"""Facts about the local etcd member, read with etcdctl 3.5 over its TLS client port.

The defaults match galley's host layout: ``/usr/local/bin/etcdctl``, endpoint
``https://127.0.0.1:2379``, CA ``/etc/etcd/pki/ca.crt`` and the maintenance client certificate
``/etc/etcd/pki/maintenance-client.{crt,key}`` (etcd's root: ``endpoint status`` needs it).
The client key is readable by root and etcd only, so call these facts with ``_sudo=True``
unless connected as root. Every argument can be overridden (an empty ``cacert``/``cert``/
``key`` drops that flag, e.g. for plain http).

The facts never fail the host: a missing etcdctl, an unreachable etcd or a TLS problem is
reported in the result's ``error`` (etcdctl's own message plus the underlying gRPC error).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyinfra.api import FactBase

from galley.etcd.access import STAMP_KEY, parse_answers
from galley.etcd.etcdctl import (
    CACERT,
    CERT,
    ETCDCTL,
    HEALTH_CERT,
    HEALTH_KEY,
    KEY,
    etcdctl_flags,
    member_hex_id,
)
from galley.etcd.etcdctl import LOCAL_ENDPOINT as ENDPOINT
from galley.etcd.identity import KEY as IDENTITY_KEY
from galley.etcd.identity import identity_of
from galley.facts.system import parse_timestamp

# Both the dial and the whole request are bounded so a dead etcd cannot hang a deploy.
TIMEOUT = "3s"

_TAG = "##galley-etcdctl"
_BEGIN = f"{_TAG} begin"
_RC = f"{_TAG} rc="
_STDERR = f"{_TAG} stderr: "
_MISSING = f"{_TAG} missing: "
_SECTION = "##galley-etcd-access "


def _etcdctl_script(
    subcommand: str,
    etcdctl: str = ETCDCTL,
    endpoint: str = ENDPOINT,
    cacert: str = CACERT,
    cert: str = CERT,
    key: str = KEY,
) -> str:
    """Shell snippet running ``etcdctl <subcommand> -w json`` that always exits 0.

    It prints a begin marker, etcdctl's stdout, its exit status and its stderr lines (prefixed),
    or a "missing" marker when etcdctl is not executable; ``_parse_etcdctl_runs`` reads it back.
    """
    binary = shlex.quote(etcdctl)
    flags = etcdctl_flags([endpoint], cacert, cert, key, command_timeout=TIMEOUT)
    invocation = " ".join([binary, *map(shlex.quote, flags), subcommand, "-w", "json"])
    return (
        f"echo '{_BEGIN}'; "
        f"if [ -x {binary} ]; then "
        f"{{ err=$({invocation} 2>&1 >&3); rc=$?; }} 3>&1; "
        f'echo "{_RC}$rc"; '
        f"[ -z \"$err\" ] || printf '%s\\n' \"$err\" | sed 's/^/{_STDERR}/'; "
        f"else printf '%s\\n' {shlex.quote(_MISSING + etcdctl)}; fi"
    )


@dataclass
class _EtcdctlRun:
    """What one ``_etcdctl_script`` invocation printed."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    rc: int | None = None
    missing: str | None = None

    def json(self) -> Any:
        """etcdctl's JSON output, or None when there is none or it does not parse."""
        try:
            return json.loads("\n".join(self.stdout))
        except ValueError:
            return None

    def error(self, message: str | None = None) -> str:
        """Why the invocation failed: ``message`` (or etcdctl's last error line) plus the cause.

        etcdctl logs the underlying gRPC error (e.g. "connection refused") as a JSON log line
        and ends with a terse "Error: context deadline exceeded"; both are kept.
        """
        if self.missing is not None:
            return f"etcdctl not found at {self.missing}"
        lines, cause = [], None
        for line in self.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                cause = entry.get("error") or cause
            elif line.strip():
                lines.append(line.strip())
        if message is None:
            message = lines[-1].removeprefix("Error: ") if lines else None
        message = (message or "").strip() or f"etcdctl exited with status {self.rc}"
        if cause and cause not in message:
            message = f"{message} ({cause})"
        return message


def _parse_etcdctl_runs(output: list[str]) -> list[_EtcdctlRun]:
    """Split a fact's output into the runs of its ``_etcdctl_script`` snippets, in order."""
    runs: list[_EtcdctlRun] = []
    for line in output:
        if line == _BEGIN:
            runs.append(_EtcdctlRun())
        elif not runs:
            continue
        elif line.startswith(_RC):
            runs[-1].rc = int(line.removeprefix(_RC))
        elif line.startswith(_STDERR):
            runs[-1].stderr.append(line.removeprefix(_STDERR))
        elif line.startswith(_MISSING):
            runs[-1].missing = line.removeprefix(_MISSING)
        else:
            runs[-1].stdout.append(line)
    return runs


class _EtcdctlFact(FactBase):
    """A fact read from the local member by etcdctl: one ``_etcdctl_script`` per subcommand."""

    subcommands: tuple[str, ...] = ()

    def command(
        self,
        etcdctl: str = ETCDCTL,
        endpoint: str = ENDPOINT,
        cacert: str = CACERT,
        cert: str = CERT,
        key: str = KEY,
    ) -> str:
        return "; ".join(
            _etcdctl_script(subcommand, etcdctl, endpoint, cacert, cert, key)
            for subcommand in self.subcommands
        )


class EtcdMembers(_EtcdctlFact):
    """The cluster's members as seen by the local etcd (``etcdctl member list``).

    Returns ``{"members": [...], "error": None}`` where each member is ``{"id": "3c718a0714f0cf0",
    "name": "node-1", "peer_urls": [...], "client_urls": [...], "is_learner": False}`` (a member
    added but not started yet has name "" and no client URLs), or ``{"members": None,
    "error": "<reason>"}`` when etcdctl is missing or etcd cannot be reached.
    """

    subcommands = ("member list",)

    @staticmethod
    def default() -> dict[str, Any]:
        return {"members": None, "error": "the fact command failed"}

    def process(self, output: list[str]) -> dict[str, Any]:
        runs = _parse_etcdctl_runs(output)
        if not runs:
            return self.default()
        run = runs[0]
        data = run.json()
        if run.rc != 0 or not isinstance(data, dict):
            return {"members": None, "error": run.error()}
        members = [
            {
                "id": member_hex_id(member["ID"]),
                "name": member.get("name", ""),
                "peer_urls": member.get("peerURLs", []),
                "client_urls": member.get("clientURLs", []),
                "is_learner": bool(member.get("isLearner", False)),
            }
            for member in data.get("members", [])
        ]
        return {"members": members, "error": None}


class EtcdClusterIdentity(_EtcdctlFact):
    """The cluster identity galley wrote into etcd (`galley.etcd.identity`), as the local
    etcd reads it: ``{"identity": "<32 hex digits>" | None, "error": None}`` (None: etcd has
    no galley marker), or ``{"identity": None, "error": "<reason>"}`` when etcd cannot be
    read."""

    subcommands = (f"get {IDENTITY_KEY}",)

    @staticmethod
    def default() -> dict[str, Any]:
        return {"identity": None, "error": "the fact command failed"}

    def process(self, output: list[str]) -> dict[str, Any]:
        runs = _parse_etcdctl_runs(output)
        data = runs[0].json() if runs else None
        if not runs or runs[0].rc != 0 or not isinstance(data, dict):
            return {"identity": None, "error": runs[0].error() if runs else "no output"}
        values = [
            base64.b64decode(kv.get("value", "")).decode(errors="replace")
            for kv in data.get("kvs") or []
        ]
        return {"identity": identity_of(values[0]) if values else None, "error": None}


class EtcdHealth(_EtcdctlFact):
    """Health and status of the local member (``endpoint health`` + ``endpoint status``).

    Returns ``{"healthy": bool, "error": str | None, "took": "3.58ms" | None, "version": "3.5.30",
    "db_size": int, "db_size_in_use": int, "leader": hex id | None, "member_id": hex id,
    "is_leader": bool, "is_learner": bool, "raft_term": int, "raft_index": int,
    "errors": ["memberID:... alarm:NOSPACE"]}``. ``healthy`` is False with an ``error`` when
    etcdctl is missing, etcd is down, or etcd reports a problem (e.g. an active alarm); status
    fields are None when the status could not be read.
    """

    subcommands = ("endpoint health", "endpoint status")

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "healthy": False,
            "error": "the fact command failed",
            "took": None,
            "version": None,
            "db_size": None,
            "db_size_in_use": None,
            "leader": None,
            "member_id": None,
            "is_leader": False,
            "is_learner": False,
            "raft_term": None,
            "raft_index": None,
            "errors": [],
        }

    def process(self, output: list[str]) -> dict[str, Any]:
        runs = _parse_etcdctl_runs(output)
        if len(runs) != 2:
            return self.default()
        health_run, status_run = runs
        result = self.default()

        health = _first_entry(health_run.json())
        result["took"] = health.get("took")
        result["healthy"] = health_run.rc == 0 and health.get("health") is True
        result["error"] = None if result["healthy"] else health_run.error(health.get("error"))

        status = _first_entry(status_run.json()).get("Status")
        if status_run.rc != 0 or not isinstance(status, dict):
            if result["error"] is None:
                result["error"] = f"endpoint status: {status_run.error()}"
            return result
        member_id = status.get("header", {}).get("member_id")
        leader = status.get("leader")
        result.update(
            version=status.get("version"),
            db_size=status.get("dbSize"),
            db_size_in_use=status.get("dbSizeInUse"),
            leader=member_hex_id(leader),
            member_id=member_hex_id(member_id),
            is_leader=bool(leader) and leader == member_id,
            is_learner=bool(status.get("isLearner", False)),
            raft_term=status.get("raftTerm"),
            raft_index=status.get("raftIndex"),
            errors=[error.strip() for error in status.get("errors", [])],
        )
        return result


class EtcdAccess(FactBase):
    """etcd's users, roles and whether authorisation is on (`galley.etcd.access`), read
    through the local member with the maintenance identity, or with ``fallback_cert`` on a
    member deployed before that identity existed (etcd answers anyone while authorisation is
    off).

    Returns ``{"enabled": bool, "revision": auth revision, "users": {name: [role, ...]},
    "roles": {name: [[permission, key, range end], ...]}, "stamp": None, "error": None}`` (an
    empty range end: one key), or ``"enabled": None`` with the ``error`` when etcd cannot be
    read. With ``trust_stamp``, when galley's stamp (`STAMP_KEY`) names the current auth
    revision, ``stamp`` is its value and ``users`` and ``roles`` are None: not read. The auth
    status is read before the users and roles, so a change while they are read shows as a
    later revision.
    """

    def command(
        self,
        etcdctl: str = ETCDCTL,
        endpoint: str = ENDPOINT,
        cacert: str = CACERT,
        cert: str = CERT,
        key: str = KEY,
        fallback_cert: str = HEALTH_CERT,
        fallback_key: str = HEALTH_KEY,
        trust_stamp: bool = False,
    ) -> str:
        flags = " ".join(map(shlex.quote, etcdctl_flags([endpoint], cacert, "", "", TIMEOUT)))
        status = 'g status auth status > "$t/0"'
        if trust_stamp:  # galley's stamp, read beside the status
            status += f" & s=$(e get {STAMP_KEY} --print-value-only 2>/dev/null); wait"
        return "\n".join(
            [
                f"c={shlex.quote(cert)} k={shlex.quote(key)}",
                f'[ -r "$c" ] || c={shlex.quote(fallback_cert)} k={shlex.quote(fallback_key)}',
                f'e() {{ {shlex.quote(etcdctl)} {flags} --cert="$c" --key="$k" "$@"; }}',
                # One answer: its label and JSON, or the error and etcdctl's last line.
                'g() { l=$1; shift; if o=$(e "$@" -w json 2>&1); '
                f'then echo "{_SECTION}$l"; printf "%s\\n" "$o"; '
                f'else echo "{_SECTION}error"; printf "%s\\n" "$o" | tail -n 1; fi; }}',
                "t=$(mktemp -d) s=",
                status,
                'r=$(sed -n \'s/.*"authRevision":\\([0-9]*\\).*/\\1/p\' "$t/0")',
                f'case "$s" in "${{r:-0}} "*) echo "{_SECTION}stamp"; printf "%s\\n" "$s";;',
                # Else every user and role at once, each into its own file, printed after status.
                "*) for kind in user role; do ( for n in $(e $kind list 2>/dev/null); do "
                'g "$kind $n" $kind get "$n" > "$t/$kind-$n" & done; wait ) & done; wait;; esac',
                'cat "$t/0" "$t"/user-* "$t"/role-* 2>/dev/null',
                'rm -rf "$t"',
            ]
        )

    @staticmethod
    def default(error: str = "the fact command failed") -> dict[str, Any]:
        return {
            "enabled": None,
            "revision": None,
            "users": {},
            "roles": {},
            "stamp": None,
            "error": error,
        }

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: dict[str, list[str]] = {}
        label = None
        for line in output:
            if line.startswith(_SECTION):
                label = line.removeprefix(_SECTION)
                if label == "error":
                    return self.default(_last_error(output, line))
                sections[label] = []
            elif label is not None:
                sections[label].append(line)
        if "status" not in sections:
            return self.default()
        found = parse_answers({name: "\n".join(lines) for name, lines in sections.items()})
        if "stamp" in sections:
            found.update(stamp="".join(sections["stamp"]), users=None, roles=None)
        return found


def _last_error(output: list[str], marker: str) -> str:
    """etcdctl's error line after the first ``marker`` in ``output``."""
    after = output[output.index(marker) + 1 :]
    return (after[0].removeprefix("Error: ").strip() if after else "") or "etcdctl failed"


class EtcdDataDir(FactBase):
    """Whether the member's data dir holds member data, and what its bootstrap file says.

    Returns ``{"empty": bool, "state": str | None, "cluster": str | None}``: ``empty`` is
    False once etcd has written ``<data_dir>/member``; ``state`` and ``cluster`` are the
    ``ETCD_INITIAL_CLUSTER_STATE`` and ``ETCD_INITIAL_CLUSTER`` of ``bootstrap_env`` (None
    without them).
    """

    def command(self, data_dir: str, bootstrap_env: str) -> str:
        member = shlex.quote(f"{data_dir}/member")
        return (
            f"if [ -d {member} ]; then echo data; else echo empty; fi; "
            f"grep -E '^ETCD_INITIAL_CLUSTER(_STATE)?=' {shlex.quote(bootstrap_env)} "
            "2>/dev/null || true"
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {"empty": False, "state": None, "cluster": None}  # unknown: never bootstrap

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.strip().partition("=")[::2] for line in output[1:] if "=" in line)
        return {
            "empty": output[0] != "data",
            "state": values.get("ETCD_INITIAL_CLUSTER_STATE") or None,
            "cluster": values.get("ETCD_INITIAL_CLUSTER") or None,
        }


class EtcdLocalMemberId(FactBase):
    """The member id the local etcd last ran as, from its unit's journal (etcd logs it as
    ``local-member-id`` on every start), or None when the journal does not say: what a data
    dir of a removed member belonged to."""

    def command(self, unit: str = "etcd") -> str:
        return (
            f"journalctl -u {shlex.quote(unit)} -o cat --no-pager -n 2000 2>/dev/null | "
            """grep -o '"local-member-id":"[0-9a-f]*"' | tail -n 1; true"""
        )

    def process(self, output: list[str]) -> str | None:
        found = re.search(r'"local-member-id":"([0-9a-f]+)"', "".join(output))
        return found.group(1) if found else None


def _first_entry(data: Any) -> dict[str, Any]:
    """The first object of an ``endpoint health/status -w json`` list (one endpoint), or {}."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return {}


class EtcdSnapshots(FactBase):
    """The member's scheduled snapshots: how many, the newest, and the timer taking them.

    Returns ``{"count": int, "newest": name | None, "newest_time": datetime (UTC, its
    modification time) | None, "newest_size": int | None, "timer": "active" | ...,
    "timer_since": datetime | None (when the timer last started), "last_result": "success" |
    "exit-code" | ... | None (the job's last run)}`` for the files ``<prefix>-r*-*.db`` of
    ``directory``.
    """

    def command(self, directory: str, prefix: str, job: str) -> str:
        pattern = shlex.quote(f"{prefix}-r*-*.db")
        return (
            f"find {shlex.quote(directory)} -maxdepth 1 -type f -name {pattern} "
            "-printf 'file %T@ %s %f\\n' 2>/dev/null; "
            "systemctl show --timestamp=us+utc -p ActiveState,ActiveEnterTimestamp "
            f"{shlex.quote(job + '.timer')} | sed 's/^/timer /'; "
            f"systemctl show -p Result {shlex.quote(job + '.service')} | sed 's/^/job /'; true"
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {
            "count": 0,
            "newest": None,
            "newest_time": None,
            "newest_size": None,
            "timer": None,
            "timer_since": None,
            "last_result": None,
        }

    def process(self, output: list[str]) -> dict[str, Any]:
        result = self.default()
        files: list[tuple[float, int, str]] = []
        properties: dict[str, str] = {}
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "file":
                mtime, size, name = rest.split(" ", 2)
                files.append((float(mtime), int(size), name))
            elif kind in ("timer", "job"):
                key, _, value = rest.partition("=")
                properties[f"{kind}.{key}"] = value
        if files:
            mtime, size, name = max(files)
            result.update(
                newest=name, newest_time=datetime.fromtimestamp(mtime, UTC), newest_size=size
            )
        result.update(
            count=len(files),
            timer=properties.get("timer.ActiveState"),
            timer_since=parse_timestamp(properties.get("timer.ActiveEnterTimestamp", "")),
            last_result=properties.get("job.Result"),
        )
        return result
