"""etcd's own authorisation: which client identity may touch which keys, enforced by etcd.

etcd takes a client's user name from its certificate's CN. Each etcd client certificate a
component declares says what its identity may do (`EtcdUser`); `changes` turns the users and
roles etcd holds (`AuthState`, read by `galley.facts.etcd.EtcdAccess`) into the etcdctl calls
that make them exactly so, ending with ``auth enable``. Every declared user gets one role,
``galley-<user>``, holding exactly its grants; the maintenance identity holds etcd's ``root``
role (member changes, snapshots, defragmentation and these very calls need it); a CN with no
user is refused every key once authorisation is on.

Once etcd holds exactly the declared users, galley writes a stamp under `STAMP_KEY`: etcd's
auth revision then and a digest of the declaration (`stamp_value`). etcd bumps the auth
revision on every user, role or authorisation change, by anyone, so while the stamp names the
current revision and the same declaration, the users and roles need not be read again.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

READ, WRITE, READWRITE = "read", "write", "readwrite"
# etcd's Permission.Type numbers (``role get -w json`` leaves out 0, read).
_PERMISSION_TYPES = {0: READ, 1: WRITE, 2: READWRITE}
ROOT = "root"
ROLE_PREFIX = "galley-"
# Where galley notes the auth revision at which etcd last held exactly the declared users.
STAMP_KEY = "/galley/etcd-access"


@dataclass(frozen=True)
class Grant:
    """``permission`` (read, write or readwrite) on ``key``, or on every key below it."""

    permission: str
    key: str
    prefix: bool = False

    def __post_init__(self) -> None:
        if self.permission not in _PERMISSION_TYPES.values():
            raise ValueError(f"not an etcd permission: {self.permission!r}")

    @property
    def span(self) -> tuple[str, str, str]:
        """(permission, key, range end) as etcd keeps it: the end is empty for one key."""
        return self.permission, self.key, _prefix_end(self.key) if self.prefix else ""


def _prefix_end(key: str) -> str:
    """The first key after every key starting with ``key`` (etcd's prefix range end)."""
    raw = key.encode()
    while raw and raw[-1] == 0xFF:
        raw = raw[:-1]
    if not raw:
        return "\0"
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


@dataclass(frozen=True)
class EtcdUser:
    """A client identity etcd knows: ``name`` is its certificate's CN; it may do exactly
    ``grants``, or everything when ``root``."""

    name: str
    grants: tuple[Grant, ...] = ()
    root: bool = False

    @property
    def role(self) -> str:
        """The one role galley gives it."""
        return ROOT if self.root else f"{ROLE_PREFIX}{self.name}"


@dataclass(frozen=True)
class AuthState:
    """What etcd holds: whether authorisation is on, each user's roles and each role's
    permissions (as `Grant.span` tuples)."""

    enabled: bool
    users: Mapping[str, frozenset[str]] = field(default_factory=dict)
    roles: Mapping[str, frozenset[tuple[str, str, str]]] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Mapping) -> AuthState:
        """From what the `EtcdAccess` fact returned (it must hold no ``error``)."""
        return cls(
            bool(found["enabled"]),
            {name: frozenset(roles) for name, roles in found["users"].items()},
            {name: frozenset(map(tuple, spans)) for name, spans in found["roles"].items()},
        )


def _role_spans(answer: Mapping) -> list[list[str]]:
    """A role's permissions from ``etcdctl role get -w json``, as sorted `Grant.span` lists."""
    return sorted(
        [
            _PERMISSION_TYPES[int(perm.get("permType", 0))],
            base64.b64decode(perm.get("key", "")).decode(),
            base64.b64decode(perm.get("range_end", "")).decode(),
        ]
        for perm in answer.get("perm") or ()
    )


def parse_answers(sections: Mapping[str, str]) -> dict[str, Any]:
    """The `EtcdAccess` fact's value (plain JSON) from the answers of ``auth status`` (key
    ``status``), ``user get <name>`` (``user <name>``) and ``role get <name>``
    (``role <name>``), each ``-w json``."""
    users, roles = {}, {}
    for key, text in sections.items():
        kind, _, name = key.partition(" ")
        if kind == "user":
            users[name] = sorted(json.loads(text).get("roles") or ())
        elif kind == "role":
            roles[name] = _role_spans(json.loads(text))
    status = json.loads(sections["status"])
    return {
        "enabled": bool(status.get("enabled")),
        "revision": int(status.get("authRevision") or 0),
        "users": users,
        "roles": roles,
        "stamp": None,
        "error": None,
    }


def _role_changes(state: AuthState, wanted: Sequence[EtcdUser]) -> list[list[str]]:
    calls: list[list[str]] = []
    for user in wanted:
        if user.root:
            continue
        held = state.roles.get(user.role)
        if held is None:
            calls.append(["role", "add", user.role])
            held = frozenset()
        spans = {grant.span for grant in user.grants}
        for _, key, end in sorted(held - spans):
            calls.append(["role", "revoke-permission", user.role, key, *filter(None, [end])])
        for permission, key, end in sorted(spans - held):
            calls.append(
                ["role", "grant-permission", user.role, permission, key, *filter(None, [end])]
            )
    return calls


def _user_changes(state: AuthState, wanted: Sequence[EtcdUser]) -> list[list[str]]:
    calls: list[list[str]] = []
    for user in [EtcdUser(ROOT, root=True), *wanted]:
        held = state.users.get(user.name)
        if held is None:
            calls.append(["user", "add", user.name, "--no-password"])
            held = frozenset()
        if user.role not in held:
            calls.append(["user", "grant-role", user.name, user.role])
        if user.name != ROOT:
            extra = sorted(held - {user.role})
            calls += [["user", "revoke-role", user.name, role] for role in extra]
    return calls


def _stale(state: AuthState, wanted: Sequence[EtcdUser]) -> list[list[str]]:
    """galley's users and roles no identity declares any more (e.g. flannel's etcd client
    after flannel left etcd mode)."""
    names = {user.name for user in wanted} | {ROOT}
    roles = {user.role for user in wanted}
    calls = [
        ["user", "delete", name]
        for name, held in sorted(state.users.items())
        if name not in names and any(role.startswith(ROLE_PREFIX) for role in held)
    ]
    return calls + [
        ["role", "delete", role]
        for role in sorted(state.roles)
        if role.startswith(ROLE_PREFIX) and role not in roles
    ]


def changes(state: AuthState, wanted: Iterable[EtcdUser]) -> list[list[str]]:
    """The etcdctl calls (arguments after the global flags) that give etcd exactly the
    ``wanted`` users, their roles and a ``root`` user, then turn authorisation on: every
    identity exists with its grants before etcd starts refusing the others. Empty when etcd
    is so already."""
    users = sorted(set(wanted), key=lambda user: user.name)
    if not any(user.root for user in users):
        raise ValueError("no etcd user holds root: nothing could administer etcd")
    calls = _role_changes(state, users) + _user_changes(state, users) + _stale(state, users)
    return calls + ([] if state.enabled else [["auth", "enable"]])


def stamp_value(revision: int, wanted: Iterable[EtcdUser]) -> str:
    """What `STAMP_KEY` holds once etcd holds exactly ``wanted`` at auth ``revision``: the
    revision and a digest of the calls that would make the declaration from nothing."""
    declared = json.dumps(changes(AuthState(False), wanted)).encode()
    return f"{revision} {hashlib.sha256(declared).hexdigest()[:32]}"


def summary(calls: Sequence[Sequence[str]]) -> str:
    """One line naming what ``calls`` change (a dry run's operation name)."""
    return "; ".join(" ".join(call) for call in calls)
