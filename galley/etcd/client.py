"""The etcdctl and etcdutl calls membership work makes, through an injectable command runner.

A runner takes one shell command line and returns ``(ok, stdout, stderr)``: `host_runner`
runs it on a pyinfra host (inside a ``python.call``, at execution time); tests run it locally.
Every etcdctl line comes from `galley.etcd.etcdctl.etcdctl_command` (bounded timeouts).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyinfra.api.host import Host

from galley.etcd.etcdctl import CACERT, CERT, ETCDCTL, ETCDUTL, KEY, etcdctl_command, member_hex_id
from galley.etcd.plan import Member

Runner = Callable[[str], tuple[bool, str, str]]

_ADDED = re.compile(r"^Member\s+([0-9a-f]+) added to cluster", re.MULTILINE)
_INITIAL_CLUSTER = re.compile(r'^ETCD_INITIAL_CLUSTER="([^"]*)"', re.MULTILINE)


class EtcdctlError(Exception):
    """An etcdctl or etcdutl call failed; the message is the tool's own error line."""


def host_runner(host: Host) -> Runner:
    """A runner for ``host`` (use at execution time, e.g. in a ``python.call``)."""

    def run(command: str) -> tuple[bool, str, str]:
        ok, output = host.run_shell_command(command)
        return ok, output.stdout, output.stderr

    return run


@dataclass(frozen=True)
class Tls:
    """The client TLS files etcdctl presents (all empty: plain http)."""

    cacert: str = CACERT
    cert: str = CERT
    key: str = KEY


PLAIN = Tls("", "", "")


@dataclass(frozen=True)
class EtcdClient:
    """etcdctl/etcdutl through ``run`` (where the binaries and TLS files are)."""

    run: Runner
    tls: Tls = Tls()
    etcdctl: str = ETCDCTL
    etcdutl: str = ETCDUTL

    def members(self, endpoints: Sequence[str]) -> tuple[Member, ...]:
        """``member list``, through any of ``endpoints``."""
        data = json.loads(self._call(endpoints, "member", "list", "-w", "json"))
        return tuple(
            Member(
                id=member_hex_id(m["ID"]) or "",
                name=m.get("name", ""),
                peer_urls=tuple(m.get("peerURLs", ())),
                client_urls=tuple(m.get("clientURLs", ())),
                is_learner=bool(m.get("isLearner", False)),
            )
            for m in data.get("members", [])
        )

    def health(self, members: Iterable[Member]) -> dict[str, str | None]:
        """Each member's health by id: None when its first client URL answers healthy.
        Learners are not asked (they refuse the linearizable read the check makes)."""
        found: dict[str, str | None] = {}
        endpoints: dict[str, str] = {}
        for member in members:
            if member.is_learner:
                found[member.id] = "learner"
            elif member.client_urls:
                endpoints[member.client_urls[0]] = member.id
                found[member.id] = "no answer"
            else:
                found[member.id] = "not started"
        if endpoints:
            _, out, _ = self.run(self._command(list(endpoints), "endpoint", "health", "-w", "json"))
            for entry in _json_list(out):
                member_id = endpoints.get(entry.get("endpoint"))
                if member_id is not None:
                    error = None if entry.get("health") else entry.get("error") or "unhealthy"
                    found[member_id] = error
        return found

    def leaders(self, endpoints: Sequence[str]) -> frozenset[str]:
        """The leader ids ``endpoints`` report (``endpoint status``)."""
        _, out, _ = self.run(self._command(endpoints, "endpoint", "status", "-w", "json"))
        return frozenset(
            member_hex_id(entry.get("Status", {}).get("leader")) or "none"
            for entry in _json_list(out)
        )

    def revisions(self, endpoints: Sequence[str]) -> dict[str, int]:
        """The store revision each of ``endpoints`` answering ``endpoint status`` is at."""
        _, out, _ = self.run(self._command(endpoints, "endpoint", "status", "-w", "json"))
        return {
            entry["Endpoint"]: int(entry["Status"]["header"]["revision"])
            for entry in _json_list(out)
            if "Endpoint" in entry and "revision" in entry.get("Status", {}).get("header", {})
        }

    def alarms(self, endpoints: Sequence[str]) -> tuple[str, ...]:
        """Raised alarms, one line each (``alarm list``)."""
        return tuple(
            line.strip() for line in self._call(endpoints, "alarm", "list").splitlines() if line
        )

    def add_learner(self, endpoints: Sequence[str], name: str, peer_url: str) -> tuple[str, str]:
        """``member add --learner``: the new member's id and the ``initial-cluster`` etcd
        returned for it."""
        out = self._call(endpoints, "member", "add", name, f"--peer-urls={peer_url}", "--learner")
        added, initial = _ADDED.search(out), _INITIAL_CLUSTER.search(out)
        if not added or not initial:
            raise EtcdctlError(f"unexpected output of member add: {out.strip()!r}")
        return added.group(1), initial.group(1)

    def promote(self, endpoints: Sequence[str], member_id: str) -> None:
        """``member promote`` (etcd refuses a learner not in sync yet: EtcdctlError)."""
        self._call(endpoints, "member", "promote", member_id)

    def remove(self, endpoints: Sequence[str], member_id: str) -> None:
        """``member remove``."""
        self._call(endpoints, "member", "remove", member_id)

    def move_leader(self, leader_endpoint: str, member_id: str) -> None:
        """``move-leader`` to ``member_id`` (sent to the current leader)."""
        self._call([leader_endpoint], "move-leader", member_id)

    def put(self, endpoints: Sequence[str], key: str, value: str) -> None:
        """``put key value``."""
        self._call(endpoints, "put", key, value)

    def snapshot(self, endpoint: str, path: str) -> dict[str, Any]:
        """Save a snapshot from ``endpoint`` to ``path`` (mode 0600) and return what
        ``etcdutl snapshot status`` reads back: hash, revision, totalKey, totalSize."""
        directory = shlex.quote(path.rsplit("/", 1)[0] or "/")
        save = self._command([endpoint], "snapshot", "save", path, command_timeout="60s")
        self._checked(f"umask 077 && mkdir -p {directory} && {save}")
        status = " ".join(
            map(shlex.quote, [self.etcdutl, "snapshot", "status", path, "-w", "json"])
        )
        return json.loads(self._checked(status))

    def _command(self, endpoints: Sequence[str], *args: str, **flags: str) -> str:
        tls = {"cacert": self.tls.cacert, "cert": self.tls.cert, "key": self.tls.key}
        return etcdctl_command(endpoints, *args, etcdctl=self.etcdctl, **tls, **flags)

    def _call(self, endpoints: Sequence[str], *args: str) -> str:
        return self._checked(self._command(endpoints, *args))

    def _checked(self, command: str) -> str:
        ok, out, err = self.run(command)
        if not ok:
            raise EtcdctlError(_error_line(err) or f"failed: {command}")
        return out


def _json_list(text: str) -> list[dict[str, Any]]:
    """An ``-w json`` list output (health, status), or [] when there is none."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def _error_line(stderr: str) -> str:
    """etcdctl's own error line (``Error: ...``), else its last line of output."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error:")]
    return (errors or lines or [""])[-1]
