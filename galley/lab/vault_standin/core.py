"""Stand-in Vault core: authentication, ACL checks, routing and response envelopes."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from galley.lab.vault_standin.acl import _DEFAULT_POLICY, Acl, _needs_sudo, parse_policy
from galley.lab.vault_standin.auth import TokenBackend
from galley.lab.vault_standin.kv import KvBackend
from galley.lab.vault_standin.plumbing import Backend, Call, Mount, Raw, Resp, Token
from galley.lab.vault_standin.sys_backend import SysBackend
from galley.lab.vault_standin.values import (
    JSON,
    SYSTEM_TTL,
    VERSION,
    VaultError,
    _as_bool,
    _as_int,
    _bad,
    _get,
    _random_id,
    _rfc3339,
    _unsupported,
)


@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    content_type: str = JSON
    body: bytes = b""


def _json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, JSON, json.dumps(payload).encode())


_OPERATIONS = {"GET": "read", "LIST": "list", "POST": "update", "PUT": "update", "DELETE": "delete"}


class Core:
    """All of the stand-in's state and request handling, behind one lock."""

    def __init__(self, root_token: str) -> None:
        self.lock = threading.RLock()
        self.sealed = False
        self.cluster_id = str(uuid.uuid4())
        self.cluster_name = f"vault-cluster-{secrets.token_hex(4)}"
        self.tokens: dict[str, Token] = {}
        self.policies: dict[str, tuple[str, dict[str, frozenset[str]]]] = {
            "default": (_DEFAULT_POLICY, parse_policy(_DEFAULT_POLICY))
        }
        self.mounts: dict[str, Mount] = {}
        self.add_mount("sys", "system", lambda m: SysBackend(self), "system endpoints")
        self.add_mount("cubbyhole", "cubbyhole", lambda m: Backend(), "per-token storage")
        self.add_mount("identity", "identity", lambda m: Backend(), "identity store")
        self.add_mount("auth/token", "token", lambda m: TokenBackend(self), "token based auth")
        self.add_mount(
            "secret", "kv", KvBackend, "key/value secret storage", options={"version": "2"}
        )
        root = Token(root_token, _random_id(), ["root"], 0, time.time(), "root", "auth/token/root")
        root.renewable = False
        self.tokens[root_token] = root

    # -- state helpers ------------------------------------------------------------------------

    def add_mount(
        self,
        path: str,
        kind: str,
        make: Callable[[Mount], Backend],
        description: str = "",
        **settings: Any,
    ) -> None:
        """Mount a backend at ``path``; 400 when the path overlaps an existing mount."""
        for existing in self.mounts:
            if (
                path == existing
                or path.startswith(f"{existing}/")
                or existing.startswith(f"{path}/")
            ):
                shown = existing.removeprefix("auth/") if path.startswith("auth/") else existing
                raise _bad(f"path is already in use at {shown}/")
        mount = Mount(path, kind, Backend(), description, **settings)
        mount.backend = make(mount)
        self.mounts[path] = mount

    def new_token(
        self,
        policies: list[str],
        *,
        ttl: int,
        display_name: str,
        path: str,
        meta: dict[str, str] | None = None,
        renewable: bool = True,
        orphan: bool = False,
        parent: str | None = None,
    ) -> Token:
        """Create a service token; TTL defaults to and is capped at the system's 768h."""
        policies = sorted(set(policies))
        root = "root" in policies
        ttl = 0 if root and not ttl else min(ttl or SYSTEM_TTL, SYSTEM_TTL)
        now = time.time()
        token = Token(
            f"hvs.{_random_id()}",
            _random_id(),
            policies,
            ttl,
            now,
            display_name,
            path,
            meta=meta,
            renewable=renewable and bool(ttl),
            orphan=orphan,
            parent=parent,
            expires=now + ttl if ttl else None,
        )
        self.tokens[token.id] = token
        return token

    @staticmethod
    def auth_block(token: Token) -> dict[str, Any]:
        """The ``auth`` object of a login or token/create response."""
        remaining = int(token.expires - time.time()) if token.expires else 0
        return {
            "client_token": token.id,
            "accessor": token.accessor,
            "policies": token.policies,
            "token_policies": token.policies,
            "metadata": token.meta,
            "lease_duration": remaining,
            "renewable": token.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": token.orphan,
            "mfa_requirement": None,
            "num_uses": 0,
        }

    @staticmethod
    def lookup_data(token: Token) -> dict[str, Any]:
        """What auth/token/lookup-self reports."""
        issued = datetime.fromtimestamp(token.issued, UTC)
        expires = datetime.fromtimestamp(token.expires, UTC) if token.expires else None
        return {
            "accessor": token.accessor,
            "creation_time": int(token.issued),
            "creation_ttl": token.ttl,
            "display_name": token.display_name,
            "entity_id": "",
            "expire_time": _rfc3339(expires) if expires else None,
            "explicit_max_ttl": 0,
            "id": token.id,
            "issue_time": _rfc3339(issued),
            "meta": token.meta,
            "num_uses": 0,
            "orphan": token.orphan,
            "path": token.path,
            "policies": token.policies,
            "renewable": token.renewable,
            "ttl": max(0, int(token.expires - time.time())) if token.expires else 0,
            "type": "service",
        }

    def revoke(self, token_id: str) -> None:
        """Revoke a token and, as Vault does, its non-orphan children."""
        self.tokens.pop(token_id, None)
        for child in [t.id for t in self.tokens.values() if t.parent == token_id]:
            self.revoke(child)

    def acl(self, token: Token) -> Acl:
        """The merged ACL of a token's policies."""
        merged: dict[str, frozenset[str]] = {}
        for name in token.policies:
            for pattern, caps in self.policies.get(name, ("", {}))[1].items():
                union = merged.get(pattern, frozenset()) | caps
                merged[pattern] = frozenset({"deny"}) if "deny" in union else union
        return Acl(merged)

    def capabilities(self, token: Token, path: str) -> list[str]:
        """sys/capabilities-self's answer for one path."""
        if token.is_root:
            return ["root"]
        caps = self.acl(token).capabilities(path.lstrip("/"))
        return ["deny"] if not caps or "deny" in caps else sorted(caps)

    # -- request handling ---------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, query: str, headers: Any, body: bytes) -> Reply:
        """Answer one HTTP request."""
        if not raw_path.startswith("/v1/"):
            return _json_reply(404, {"errors": []})
        path = unquote(raw_path[len("/v1/") :])
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        with self.lock:
            try:
                return self._handle(method, path, params, headers, body)
            except VaultError as exc:
                return _json_reply(exc.status, {"errors": exc.errors})

    def _handle(
        self, method: str, path: str, params: dict[str, str], headers: Any, body: bytes
    ) -> Reply:
        logical = path.strip("/")
        if logical in ("sys/health", "sys/seal-status", "sys/unseal"):
            return self._special(logical, method, params, body)
        if self.sealed:
            raise VaultError(503, ["Vault is sealed"])
        op = _OPERATIONS.get(method)
        if op is None:
            raise _unsupported("operation")
        if op == "read" and params.get("list", "").lower() in ("true", "1"):
            op = "list"
        data = _parse_body(body) if op == "update" else dict(params)
        mount = self._mount_for(logical)
        sub = logical[len(mount.path) + 1 :] if mount else ""
        matched = mount.backend.match(sub) if mount else None
        token = None
        if not (mount and sub in mount.backend.unauthenticated):
            token = self._authenticate(headers)
            needed = op
            if (
                op == "update"
                and matched
                and matched[0].exists
                and not matched[0].exists(*matched[1])
            ):
                needed = "create"
            self._authorize(token, logical + ("/" if op == "list" else ""), needed)
        if mount is None:
            raise VaultError(404, [f'no handler for route "{logical}". route entry not found.'])
        if matched is None:
            raise _unsupported("path")
        route, groups = matched
        handler = route.handlers.get(op)
        if handler is None:
            raise _unsupported("operation")
        result = handler(Call(op, logical, data, token), *groups)
        return self._envelope(op, result, mount)

    def _special(self, path: str, method: str, params: dict[str, str], body: bytes) -> Reply:
        """sys/health, sys/seal-status and sys/unseal: no token, answered even when sealed."""
        if path == "sys/health":
            if method not in ("GET", "HEAD"):
                raise _unsupported("operation")
            code_param, default = ("sealedcode", 503) if self.sealed else ("activecode", 200)
            status = _as_int(params.get(code_param, default), code_param)
            return _json_reply(status, self._health_body())
        if path == "sys/unseal":
            if method not in ("PUT", "POST"):
                raise _unsupported("operation")
            data = _parse_body(body)
            if not data.get("key") and not _get(data, "reset", _as_bool, False):
                raise _bad(
                    "'key' must be specified in request body as JSON, or 'reset' set to true"
                )
            if data.get("key"):
                self.sealed = False
        elif method != "GET":
            raise _unsupported("operation")
        return _json_reply(200, self._seal_status())

    def _health_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "initialized": True,
            "sealed": self.sealed,
            "standby": self.sealed,
            "performance_standby": False,
            "replication_performance_mode": "unknown" if self.sealed else "disabled",
            "replication_dr_mode": "unknown" if self.sealed else "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
            "enterprise": False,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
            "replication_primary_canary_age_ms": 0,
        }
        if not self.sealed:
            body.update(cluster_name=self.cluster_name, cluster_id=self.cluster_id)
        return body

    def _seal_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "type": "shamir",
            "initialized": True,
            "sealed": self.sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VERSION,
            "build_date": "2024-09-24T19:48:40Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
        }
        if not self.sealed:
            status.update(cluster_name=self.cluster_name, cluster_id=self.cluster_id)
        return status

    def _mount_for(self, path: str) -> Mount | None:
        candidates = [m for p, m in self.mounts.items() if path == p or path.startswith(f"{p}/")]
        return max(candidates, key=lambda m: len(m.path), default=None)

    def _authenticate(self, headers: Any) -> Token:
        value = headers.get("X-Vault-Token") or ""
        auth = headers.get("Authorization") or ""
        if not value and auth.lower().startswith("bearer "):
            value = auth[len("bearer ") :].strip()
        if not value:
            raise VaultError(403, ["permission denied"])
        token = self.tokens.get(value)
        if token is not None and token.expires is not None and token.expires < time.time():
            self.revoke(token.id)
            token = None
        if token is None:
            raise VaultError(403, ["permission denied", "invalid token"])
        return token

    def _authorize(self, token: Token, path: str, capability: str) -> None:
        if token.is_root:
            return
        caps = self.acl(token).capabilities(path)
        denied = "deny" in caps or capability not in caps
        if denied or (_needs_sudo(path) and "sudo" not in caps):
            raise VaultError(403, ["permission denied"])

    @staticmethod
    def _envelope(op: str, result: Resp | Raw | None, mount: Mount) -> Reply:
        if isinstance(result, Raw):
            return Reply(result.status, result.content_type, result.body)
        if result is None or (op == "list" and not (result.data or {}).get("keys")):
            if op in ("read", "list"):
                return _json_reply(404, {"errors": []})
            return Reply(204, JSON, b"")
        envelope: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": result.data,
            "wrap_info": None,
            "warnings": result.warnings or None,
            "auth": result.auth,
            "mount_type": mount.backend.mount_type,
        }
        if mount.path == "sys" and result.data:  # Vault copies sys/ data to the top level
            envelope = {**result.data, **envelope}
        return _json_reply(200, envelope)


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _bad(f"failed to parse JSON input: {exc}") from None
    if not isinstance(data, dict):
        raise _bad("failed to parse JSON input: expected an object")
    return data
