"""Stand-in for HashiCorp Vault, lab/test only.

Never import this from a production code path. It serves, on 127.0.0.1, the slice of Vault's HTTP
API that galley drives through hvac 2.4, with Vault's envelopes, status codes and error texts
(modelled on Vault 1.17; see /work/shared/reference/vault-pki.md). State lives in memory only.
Like ``vault server -dev`` it starts unsealed with a KV v2 mount at ``secret/``.

Known divergences from real Vault, on purpose:
- One unseal key: any key unseals at once; there is no init/rekey, no storage, no leases.
- PKI: keys rsa/ec only, output format ``pem`` only, no CRL/OCSP, no URI or other SANs. As in
  Vault >= 1.11, generating another root adds a new issuer but leaves the default issuer alone.
- KV: version 2 only, no soft delete/undelete/destroy of single versions.
- ACL: only ``capabilities`` (and legacy ``policy``) of ``path`` blocks are honoured; parameter
  constraints are parsed and ignored. Auth methods: token and approle only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import secrets
import signal
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERSION = "1.17.6"
SYSTEM_TTL = 768 * 3600  # Vault's default and maximum lease TTL (768h)
JSON = "application/json"
PEM_CHAIN = "application/pem-certificate-chain"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class VaultError(Exception):
    """An error answered as ``{"errors": [...]}`` with the given HTTP status."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors


def _bad(message: str) -> VaultError:
    return VaultError(400, [message])


def _unsupported(what: str) -> VaultError:
    status = 404 if what == "path" else 405
    return VaultError(status, [f"1 error occurred:\n\t* unsupported {what}\n\n"])


# ---------------------------------------------------------------------------------------------
# small value helpers (Vault's field decoding, Go's time formatting)
# ---------------------------------------------------------------------------------------------

_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)"
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
}  # fmt: skip


def _convert_error(value: Any, name: str) -> VaultError:
    return _bad(f'error converting input {value} for field "{name}"')


def _as_duration(value: Any, name: str) -> int:
    """Seconds from an int, a digit string or a Go duration ("87600h", "1h30m", "7d")."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise _convert_error(value, name)
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if not re.fullmatch(f"(?:{_DURATION_PART})+", text):
        raise _bad(f'error converting input {text} for field "{name}": invalid duration "{text}"')
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in re.findall(_DURATION_PART, text)))


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "t", "1", "false", "f", "0"):
        return value.lower() in ("true", "t", "1")
    raise _convert_error(value, name)


def _as_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _convert_error(value, name) from None


def _as_list(value: Any, name: str) -> list[str]:
    """A Vault comma-string-slice: "a,b" or ["a", "b"]."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    raise _convert_error(value, name)


def _get(data: dict[str, Any], name: str, convert: Callable[[Any, str], Any], default: Any) -> Any:
    value = data.get(name)
    return default if value is None else convert(value, name)


def _go_duration(seconds: int) -> str:
    """Format like Go's time.Duration.String(): 2592000 -> "720h0m0s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _rfc3339(moment: datetime) -> str:
    """Format like Go's time.RFC3339Nano in UTC."""
    moment = moment.astimezone(UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _now() -> datetime:
    return datetime.now(UTC)


def _random_id(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


# ---------------------------------------------------------------------------------------------
# ACL policies: a small HCL subset parser and Vault's path matching
# ---------------------------------------------------------------------------------------------

CAPABILITIES = ("create", "read", "update", "delete", "list", "sudo", "deny")
_LEGACY_POLICIES = {
    "deny": ("deny",),
    "read": ("read", "list"),
    "write": ("create", "read", "update", "delete", "list"),
    "sudo": ("create", "read", "update", "delete", "list", "sudo"),
}
_HCL_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
      | (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_.-]*)
      | (?P<punct>[{}\[\]=,:])""",
    re.VERBOSE | re.DOTALL,
)


class _HclParser:
    """Parse HCL bodies into {key: [(labels, value), ...]}; values are str, list or dict."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _HCL_TOKEN.match(text, pos)
            if match is None:
                raise ValueError(f"unexpected character {text[pos]!r} at offset {pos}")
            pos = match.end()
            kind = match.lastgroup or ""
            if kind == "string":
                self.tokens.append((kind, json.loads(match.group())))
            elif kind != "skip":
                self.tokens.append((kind, match.group()))
        self.pos = 0

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eof", "")

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "eof" or (value is not None and token[1] != value):
            raise ValueError(f"expected {value or 'a token'}, found {token[1] or 'end of input'}")
        self.pos += 1
        return token

    def body(self, closing: str | None = None) -> dict[str, list[tuple[list[str], Any]]]:
        items: dict[str, list[tuple[list[str], Any]]] = {}
        while self._peek() not in (("eof", ""), ("punct", closing)):
            kind, key = self._take()
            if kind not in ("ident", "string"):
                raise ValueError(f"unexpected {key!r}")
            labels = []
            while self._peek()[0] == "string":
                labels.append(self._take()[1])
            if self._peek()[1] in ("=", ":"):
                self._take()
                value = self.value()
            else:
                self._take("{")
                value = self.body("}")
                self._take("}")
            items.setdefault(key, []).append((labels, value))
            if self._peek()[1] == ",":
                self._take()
        return items

    def value(self) -> Any:
        kind, text = self._take()
        if text == "[":
            values = []
            while self._peek()[1] != "]":
                values.append(self.value())
                if self._peek()[1] == ",":
                    self._take()
            self._take("]")
            return values
        if text == "{":
            inner = self.body("}")
            self._take("}")
            return inner
        if kind in ("string", "number", "ident"):
            return text
        raise ValueError(f"unexpected {text!r}")


def parse_policy(text: str) -> dict[str, frozenset[str]]:
    """Parse an ACL policy (HCL subset or JSON) into {path pattern: capabilities}."""
    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text)
            blocks = [([p], b) for p, b in (document.get("path") or {}).items()]
        else:
            blocks = _HclParser(text).body().get("path", [])
    except (ValueError, AttributeError) as exc:
        raise _bad(f"failed to parse policy: {exc}") from None
    rules: dict[str, frozenset[str]] = {}
    for labels, block in blocks:
        if len(labels) != 1 or not isinstance(block, dict):
            raise _bad("failed to parse policy: a path block needs exactly one path string")
        pattern = labels[0].lstrip("/")
        caps = set(_block_value(block, "capabilities") or [])
        legacy = _block_value(block, "policy")
        if legacy is not None:
            if legacy not in _LEGACY_POLICIES:
                raise _bad(f'failed to parse policy: path "{pattern}": invalid policy "{legacy}"')
            caps.update(_LEGACY_POLICIES[legacy])
        for cap in caps:
            if cap not in CAPABILITIES:
                raise _bad(f'failed to parse policy: path "{pattern}": invalid capability "{cap}"')
        merged = rules.get(pattern, frozenset()) | caps
        rules[pattern] = frozenset({"deny"}) if "deny" in merged else frozenset(merged)
    return rules


def _block_value(block: dict[str, Any], key: str) -> Any:
    """A key's value in an HCL body (list of (labels, value)) or a JSON object."""
    value = block.get(key)
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return value[-1][1]
    return value


def _glob_regex(pattern: str) -> re.Pattern[str]:
    body = pattern[:-1] if pattern.endswith("*") else pattern
    parts = ["[^/]+" if seg == "+" else re.escape(seg) for seg in body.split("/")]
    return re.compile("/".join(parts) + (".*" if pattern.endswith("*") else ""), re.DOTALL)


def _priority(pattern: str) -> tuple[int, bool, int, int, str]:
    """Vault's ordering of wildcard paths; the highest tuple is the most specific rule."""
    segments = pattern.split("/")
    plus_offsets = [sum(len(s) + 1 for s in segments[:i]) for i, s in enumerate(segments)
                    if s == "+"]  # fmt: skip
    wild = plus_offsets + ([len(pattern) - 1] if pattern.endswith("*") else [])
    return (min(wild), not pattern.endswith("*"), -len(plus_offsets), len(pattern), pattern)


class Acl:
    """Merged rules of a token's policies, answering capabilities per request path."""

    def __init__(self, rules: dict[str, frozenset[str]]) -> None:
        self.exact = {
            p: c for p, c in rules.items() if not p.endswith("*") and "+" not in p.split("/")
        }
        self.wild = sorted(
            ((_priority(p), _glob_regex(p), c) for p, c in rules.items() if p not in self.exact),
            key=lambda item: item[0],
            reverse=True,
        )

    def capabilities(self, path: str) -> frozenset[str]:
        """Capabilities of the most specific rule matching ``path`` (empty when none)."""
        if path in self.exact:
            return self.exact[path]
        if path.endswith("/") and path[:-1] in self.exact:  # LIST on an exact rule
            return self.exact[path[:-1]]
        for _, regex, caps in self.wild:
            if regex.fullmatch(path):
                return caps
        return frozenset()


_DEFAULT_POLICY = """\
# Granted to every token unless created with no_default_policy (stand-in's short version).
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "sys/internal/ui/resultant-acl" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/wrapping/wrap" { capabilities = ["update"] }
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/wrapping/unwrap" { capabilities = ["update"] }
path "sys/tools/hash" { capabilities = ["update"] }
path "sys/tools/hash/*" { capabilities = ["update"] }
"""


def _needs_sudo(path: str) -> bool:
    return path == "sys/seal" or path.startswith("sys/auth/")


# ---------------------------------------------------------------------------------------------
# request plumbing: calls, responses, routes, backends, mounts, tokens
# ---------------------------------------------------------------------------------------------


@dataclass
class Token:
    """A service token and what lookup-self reports about it."""

    id: str
    accessor: str
    policies: list[str]
    ttl: int
    issued: float
    display_name: str
    path: str
    meta: dict[str, str] | None = None
    renewable: bool = True
    orphan: bool = False
    parent: str | None = None
    expires: float | None = None

    @property
    def is_root(self) -> bool:
        return "root" in self.policies


@dataclass
class Call:
    """One logical request after authentication."""

    op: str  # read, list, update, delete
    path: str
    data: dict[str, Any]
    token: Token | None


@dataclass
class Resp:
    """A logical response; ``None`` from a handler means 204 (writes) or 404 (reads)."""

    data: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    auth: dict[str, Any] | None = None


@dataclass
class Raw:
    """A response that bypasses the JSON envelope (ca/pem, sys/health)."""

    status: int
    content_type: str
    body: bytes


Handler = Callable[..., Resp | Raw | None]


@dataclass
class Route:
    """A path pattern inside a backend, its handlers per operation, its existence check."""

    pattern: re.Pattern[str]
    handlers: dict[str, Handler]
    exists: Callable[..., bool] | None = None


def _route(regex: str, exists: Callable[..., bool] | None = None, **handlers: Handler) -> Route:
    return Route(re.compile(regex, re.DOTALL), handlers, exists)


class Backend:
    """Routes of one mount; subclasses fill ``routes``."""

    mount_type = ""
    unauthenticated: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def match(self, sub: str) -> tuple[Route, tuple[str, ...]] | None:
        """The first route whose pattern matches the path inside the mount."""
        for route in self.routes:
            found = route.pattern.fullmatch(sub)
            if found:
                return route, found.groups()
        return None


@dataclass
class Mount:
    """A secrets engine or auth method mounted at ``path`` (no trailing slash)."""

    path: str
    type: str
    backend: Backend
    description: str = ""
    default_ttl: int = 0
    max_ttl: int = 0
    options: dict[str, str] | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self.accessor = f"{self.type}_{secrets.token_hex(4)}"

    @property
    def effective_default_ttl(self) -> int:
        return self.default_ttl or SYSTEM_TTL

    @property
    def effective_max_ttl(self) -> int:
        return self.max_ttl or SYSTEM_TTL

    def describe(self) -> dict[str, Any]:
        """The entry sys/mounts and sys/auth list for this mount."""
        return {
            "accessor": self.accessor,
            "config": {
                "default_lease_ttl": self.default_ttl,
                "force_no_cache": False,
                "max_lease_ttl": self.max_ttl,
            },
            "description": self.description,
            "external_entropy_access": False,
            "local": False,
            "options": self.options,
            "plugin_version": "",
            "running_plugin_version": f"v{VERSION}+builtin.vault",
            "running_sha256": "",
            "seal_wrap": False,
            "type": self.type,
            "uuid": self.uuid,
        }


# ---------------------------------------------------------------------------------------------
# sys/ backend
# ---------------------------------------------------------------------------------------------


class SysBackend(Backend):
    """sys/mounts, sys/auth, sys/policies/acl, sys/capabilities-self, sys/seal."""

    mount_type = "system"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.routes = [
            _route(r"mounts", read=self._list_mounts),
            _route(r"mounts/(.+)/tune", read=self._read_tune, update=self._tune),
            _route(
                r"mounts/(.+)", read=self._read_mount, update=self._enable, delete=self._disable
            ),
            _route(r"auth", read=self._list_auth),
            _route(r"auth/(.+)", update=self._enable_auth, delete=self._disable_auth),
            _route(r"policies/acl", list=self._list_policies),
            _route(
                r"policies/acl/(.+)",
                exists=lambda name: name.lower() in core.policies,
                read=self._read_policy,
                update=self._write_policy,
                delete=self._delete_policy,
            ),
            _route(r"capabilities-self", update=self._capabilities_self),
            _route(r"seal", update=self._seal),
        ]

    def _secret_mounts(self) -> dict[str, Mount]:
        return {p: m for p, m in self.core.mounts.items() if not p.startswith("auth/")}

    def _list_mounts(self, call: Call) -> Resp:
        return Resp({f"{p}/": m.describe() for p, m in sorted(self._secret_mounts().items())})

    def _mount_or_400(self, path: str) -> Mount:
        mount = self.core.mounts.get(path.strip("/"))
        if mount is None:
            raise _bad(f"no mount entry found for '{path.strip('/')}/'")
        return mount

    def _read_mount(self, call: Call, path: str) -> Resp:
        return Resp(self._mount_or_400(path).describe())

    def _read_tune(self, call: Call, path: str) -> Resp:
        mount = self._mount_or_400(path)
        data: dict[str, Any] = {
            "default_lease_ttl": mount.effective_default_ttl,
            "max_lease_ttl": mount.effective_max_ttl,
            "force_no_cache": False,
            "description": mount.description,
        }
        if mount.options:
            data["options"] = mount.options
        return Resp(data)

    def _tune(self, call: Call, path: str) -> None:
        mount = self._mount_or_400(path)
        mount.default_ttl = _get(call.data, "default_lease_ttl", _as_duration, mount.default_ttl)
        mount.max_ttl = _get(call.data, "max_lease_ttl", _as_duration, mount.max_ttl)
        mount.description = str(call.data.get("description", mount.description))

    def _enable(self, call: Call, path: str) -> None:
        if path.strip("/").split("/")[0] == "auth":
            raise _bad("cannot mount under auth/")
        kind = str(call.data.get("type") or "")
        options = dict(call.data.get("options") or {})
        if kind == "kv-v2":
            kind, options["version"] = "kv", "2"
        if kind == "pki":
            make: Callable[[Mount], Backend] = PkiBackend
        elif kind == "kv":
            if str(options.get("version", "1")) != "2":
                raise _bad("the stand-in supports kv version 2 only (options.version=2)")
            options["version"] = "2"
            make = KvBackend
        else:
            raise _bad(f"plugin not found in the catalog: {kind}")
        config = call.data.get("config") or {}
        self.core.add_mount(
            path.strip("/"),
            kind,
            make,
            description=str(call.data.get("description") or ""),
            default_ttl=_get(config, "default_lease_ttl", _as_duration, 0),
            max_ttl=_get(config, "max_lease_ttl", _as_duration, 0),
            options=options or None,
        )

    def _disable(self, call: Call, path: str) -> None:
        path = path.strip("/")
        if path in ("sys", "cubbyhole", "identity") or path.startswith("auth/"):
            raise _bad(f"cannot unmount '{path}/'")
        self.core.mounts.pop(path, None)

    def _list_auth(self, call: Call) -> Resp:
        auth = {p[len("auth/") :]: m for p, m in self.core.mounts.items() if p.startswith("auth/")}
        return Resp({f"{p}/": m.describe() for p, m in sorted(auth.items())})

    def _enable_auth(self, call: Call, path: str) -> None:
        kind = str(call.data.get("type") or "")
        if kind != "approle":
            raise _bad(f"plugin not found in the catalog: {kind}")
        config = call.data.get("config") or {}
        self.core.add_mount(
            f"auth/{path.strip('/')}",
            kind,
            lambda mount: AppRoleBackend(self.core),
            description=str(call.data.get("description") or ""),
            default_ttl=_get(config, "default_lease_ttl", _as_duration, 0),
            max_ttl=_get(config, "max_lease_ttl", _as_duration, 0),
        )

    def _disable_auth(self, call: Call, path: str) -> None:
        if path.strip("/") == "token":
            raise _bad("token credential backend cannot be disabled")
        self.core.mounts.pop(f"auth/{path.strip('/')}", None)

    def _list_policies(self, call: Call) -> Resp:
        return Resp({"keys": sorted([*self.core.policies, "root"])})

    def _read_policy(self, call: Call, name: str) -> Resp | None:
        name = name.lower()
        if name == "root":
            return Resp({"name": "root", "policy": ""})
        if name not in self.core.policies:
            return None
        return Resp({"name": name, "policy": self.core.policies[name][0]})

    def _write_policy(self, call: Call, name: str) -> None:
        name = name.lower()
        if name == "root":
            raise _bad('cannot update "root" policy')
        text = call.data.get("policy")
        if not isinstance(text, str) or not text.strip():
            raise _bad("'policy' parameter not supplied or empty")
        self.core.policies[name] = (text, parse_policy(text))

    def _delete_policy(self, call: Call, name: str) -> None:
        name = name.lower()
        if name in ("root", "default"):
            raise _bad(f'cannot delete "{name}" policy')
        self.core.policies.pop(name, None)

    def _capabilities_self(self, call: Call) -> Resp:
        paths = _as_list(call.data.get("paths") or call.data.get("path"), "paths")
        if not paths:
            raise _bad("paths must be supplied")
        assert call.token is not None
        data: dict[str, Any] = {p: self.core.capabilities(call.token, p) for p in paths}
        if len(paths) == 1:
            data["capabilities"] = data[paths[0]]
        return Resp(data)

    def _seal(self, call: Call) -> None:
        self.core.sealed = True


# ---------------------------------------------------------------------------------------------
# auth/token and auth/<approle>
# ---------------------------------------------------------------------------------------------


class TokenBackend(Backend):
    """auth/token: create, lookup-self, renew-self, revoke-self."""

    mount_type = "token"

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.routes = [
            _route(r"create", update=self._create),
            _route(r"lookup-self", read=self._lookup_self),
            _route(r"renew-self", update=self._renew_self),
            _route(r"revoke-self", update=self._revoke_self),
        ]

    def _create(self, call: Call) -> Resp:
        parent = call.token
        assert parent is not None
        requested = _get(call.data, "policies", _as_list, None)
        policies = list(parent.policies) if requested is None else requested
        if not parent.is_root and not set(policies) - {"default"} <= set(parent.policies):
            raise _bad("child policies must be subset of parent")
        if not _get(call.data, "no_default_policy", _as_bool, False) and "root" not in policies:
            policies.append("default")
        display = _get(call.data, "display_name", lambda v, n: str(v), "")
        meta = call.data.get("meta")
        token = self.core.new_token(
            policies,
            ttl=_get(call.data, "ttl", _as_duration, 0),
            display_name=f"token-{display}" if display else "token",
            path="auth/token/create",
            meta=dict(meta) if isinstance(meta, dict) else None,
            renewable=_get(call.data, "renewable", _as_bool, True),
            parent=parent.id,
        )
        return Resp(auth=self.core.auth_block(token))

    def _lookup_self(self, call: Call) -> Resp:
        assert call.token is not None
        return Resp(self.core.lookup_data(call.token))

    def _renew_self(self, call: Call) -> Resp:
        token = call.token
        assert token is not None
        if token.expires is None or not token.renewable:
            raise _bad("lease is not renewable")
        increment = _get(call.data, "increment", _as_duration, 0) or token.ttl
        token.expires = time.time() + min(increment, SYSTEM_TTL)
        return Resp(auth=self.core.auth_block(token))

    def _revoke_self(self, call: Call) -> None:
        assert call.token is not None
        self.core.revoke(call.token.id)


class AppRoleBackend(Backend):
    """auth/<approle mount>: roles, role-id, secret-id, login."""

    mount_type = "approle"
    unauthenticated = frozenset({"login"})

    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core
        self.roles: dict[str, dict[str, Any]] = {}
        self.secret_ids: dict[str, tuple[str, float | None]] = {}  # secret id -> role, expiry
        self.routes = [
            _route(r"role", list=self._list_roles),
            _route(
                r"role/([^/]+)",
                exists=lambda name: name.lower() in self.roles,
                read=self._read_role,
                update=self._write_role,
                delete=self._delete_role,
            ),
            _route(r"role/([^/]+)/role-id", read=self._read_role_id),
            _route(r"role/([^/]+)/secret-id", update=self._new_secret_id),
            _route(r"login", update=self._login),
        ]

    def _list_roles(self, call: Call) -> Resp:
        return Resp({"keys": sorted(self.roles)})

    def _read_role(self, call: Call, name: str) -> Resp | None:
        role = self.roles.get(name.lower())
        if role is None:
            return None
        shown = {k: v for k, v in role.items() if k != "role_id"}
        return Resp({**shown, "policies": role["token_policies"], "period": 0})

    def _write_role(self, call: Call, name: str) -> None:
        role = self.roles.get(name.lower()) or {
            "bind_secret_id": True,
            "local_secret_ids": False,
            "secret_id_bound_cidrs": None,
            "secret_id_num_uses": 0,
            "secret_id_ttl": 0,
            "token_bound_cidrs": [],
            "token_explicit_max_ttl": 0,
            "token_max_ttl": 0,
            "token_no_default_policy": False,
            "token_num_uses": 0,
            "token_period": 0,
            "token_policies": [],
            "token_ttl": 0,
            "token_type": "default",
            "role_id": str(uuid.uuid4()),
        }
        data = call.data
        if "token_policies" in data or "policies" in data:
            policies = data.get("token_policies", data.get("policies"))
            role["token_policies"] = _as_list(policies, "token_policies")
        for key in ("token_ttl", "token_max_ttl", "secret_id_ttl"):
            role[key] = _get(data, key, _as_duration, role[key])
        role["secret_id_num_uses"] = _get(
            data, "secret_id_num_uses", _as_int, role["secret_id_num_uses"]
        )
        role["bind_secret_id"] = _get(data, "bind_secret_id", _as_bool, role["bind_secret_id"])
        role["token_no_default_policy"] = _get(
            data, "token_no_default_policy", _as_bool, role["token_no_default_policy"]
        )
        if role["token_max_ttl"] and role["token_ttl"] > role["token_max_ttl"]:
            raise _bad("token_ttl should not be greater than token_max_ttl")
        self.roles[name.lower()] = role

    def _delete_role(self, call: Call, name: str) -> None:
        self.roles.pop(name.lower(), None)

    def _read_role_id(self, call: Call, name: str) -> Resp | None:
        role = self.roles.get(name.lower())
        return Resp({"role_id": role["role_id"]}) if role else None

    def _new_secret_id(self, call: Call, name: str) -> Resp:
        role = self.roles.get(name.lower())
        if role is None:
            raise _bad(f'role "{name}" does not exist')
        ttl = _get(call.data, "ttl", _as_duration, 0) or role["secret_id_ttl"]
        secret_id, accessor = str(uuid.uuid4()), str(uuid.uuid4())
        self.secret_ids[secret_id] = (name.lower(), time.time() + ttl if ttl else None)
        return Resp(
            {
                "secret_id": secret_id,
                "secret_id_accessor": accessor,
                "secret_id_num_uses": role["secret_id_num_uses"],
                "secret_id_ttl": ttl,
            }
        )

    def _login(self, call: Call) -> Resp:
        role_id = str(call.data.get("role_id") or "")
        if not role_id:
            raise _bad("missing role_id")
        found = [(n, r) for n, r in self.roles.items() if r["role_id"] == role_id]
        if not found:
            raise _bad("invalid role or secret ID")
        name, role = found[0]
        if role["bind_secret_id"]:
            entry = self.secret_ids.get(str(call.data.get("secret_id") or ""))
            if (
                entry is None
                or entry[0] != name
                or (entry[1] is not None and entry[1] < time.time())
            ):
                raise _bad("invalid role or secret ID")
        policies = list(role["token_policies"])
        if not role["token_no_default_policy"]:
            policies.append("default")
        ttl = role["token_ttl"] or SYSTEM_TTL
        if role["token_max_ttl"]:
            ttl = min(ttl, role["token_max_ttl"])
        token = self.core.new_token(
            policies,
            ttl=ttl,
            display_name="approle",
            path=call.path,
            meta={"role_name": name},
            orphan=True,
        )
        return Resp(auth=self.core.auth_block(token))


# ---------------------------------------------------------------------------------------------
# KV version 2
# ---------------------------------------------------------------------------------------------


class KvBackend(Backend):
    """KV v2: <mount>/data/<path> and <mount>/metadata/<path>."""

    mount_type = "kv"

    def __init__(self, mount: Mount) -> None:
        super().__init__()
        self.secrets: dict[str, list[dict[str, Any]]] = {}
        self.created: dict[str, str] = {}
        self.routes = [
            _route(
                r"data/(.+)",
                exists=lambda path: path in self.secrets,
                read=self._read,
                update=self._write,
            ),
            _route(r"metadata(?:/(.*))?", read=self._metadata, list=self._list, delete=self._drop),
        ]

    @staticmethod
    def _version_meta(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: entry[k] for k in ("created_time", "deletion_time", "destroyed")}

    def _read(self, call: Call, path: str) -> Resp | None:
        versions = self.secrets.get(path)
        if not versions:
            return None
        wanted = _get(call.data, "version", _as_int, 0) or len(versions)
        if not 1 <= wanted <= len(versions):
            return None
        entry = versions[wanted - 1]
        meta = {**self._version_meta(entry), "custom_metadata": None, "version": wanted}
        return Resp({"data": entry["data"], "metadata": meta})

    def _write(self, call: Call, path: str) -> Resp:
        data = call.data.get("data")
        if not isinstance(data, dict):
            raise _bad("no data provided")
        versions = self.secrets.setdefault(path, [])
        cas = (call.data.get("options") or {}).get("cas")
        if cas is not None and _as_int(cas, "cas") != len(versions):
            raise _bad("check-and-set parameter did not match the current version")
        stamp = _rfc3339(_now())
        self.created.setdefault(path, stamp)
        versions.append(
            {"data": data, "created_time": stamp, "deletion_time": "", "destroyed": False}
        )
        return Resp(
            {
                "created_time": stamp,
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions),
            }
        )

    def _metadata(self, call: Call, path: str | None) -> Resp | None:
        versions = self.secrets.get(path or "")
        if not versions:
            return None
        return Resp(
            {
                "cas_required": False,
                "created_time": self.created[path or ""],
                "current_version": len(versions),
                "custom_metadata": None,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": 0,
                "updated_time": versions[-1]["created_time"],
                "versions": {str(i): self._version_meta(v) for i, v in enumerate(versions, 1)},
            }
        )

    def _list(self, call: Call, path: str | None) -> Resp:
        prefix = f"{path.strip('/')}/" if path and path.strip("/") else ""
        keys = set()
        for name in self.secrets:
            if name.startswith(prefix):
                head, sep, _ = name[len(prefix) :].partition("/")
                keys.add(head + sep)
        return Resp({"keys": sorted(keys)})

    def _drop(self, call: Call, path: str | None) -> None:
        self.secrets.pop(path or "", None)
        self.created.pop(path or "", None)


# ---------------------------------------------------------------------------------------------
# PKI
# ---------------------------------------------------------------------------------------------

_HOSTNAME = re.compile(
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])\.?$"
)
_WILDCARD_LABEL = re.compile(r"^(\*|[a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*])$")
_CURVES: dict[int, Callable[[], ec.EllipticCurve]] = {
    224: ec.SECP224R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1,
}  # fmt: skip
_RSA_BITS = (2048, 3072, 4096, 8192)
_KEY_USAGES = {
    "digitalsignature": "digital_signature",
    "contentcommitment": "content_commitment",
    "keyencipherment": "key_encipherment",
    "dataencipherment": "data_encipherment",
    "keyagreement": "key_agreement",
    "certsign": "key_cert_sign",
    "crlsign": "crl_sign",
    "encipheronly": "encipher_only",
    "decipheronly": "decipher_only",
}
_EXT_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "serverauth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientauth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codesigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailprotection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocspsigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
_REQUIRE_CN = (
    'the common_name field is required, or must be provided in a CSR with "use_csr_common_name" '
    'set to true, unless "require_cn" is set to false'
)
_ROLE_BOOLS = {
    "allow_localhost": True, "allow_bare_domains": False, "allow_subdomains": False,
    "allow_glob_domains": False, "allow_any_name": False, "enforce_hostnames": True,
    "allow_ip_sans": True, "allow_wildcard_certificates": True, "allowed_domains_template": False,
    "allowed_uri_sans_template": False, "allow_token_displayname": False,
    "basic_constraints_valid_for_non_ca": False, "server_flag": True, "client_flag": True,
    "code_signing_flag": False, "email_protection_flag": False, "use_csr_common_name": True,
    "use_csr_sans": True, "require_cn": True, "generate_lease": False, "no_store": False,
    "use_pss": False,
}  # fmt: skip
_ROLE_LISTS = {
    "allowed_domains": [], "allowed_other_sans": [], "allowed_serial_numbers": [],
    "allowed_uri_sans": [], "cn_validations": ["email", "hostname"], "country": [],
    "ext_key_usage": [], "ext_key_usage_oids": [],
    "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"], "locality": [],
    "organization": [], "ou": [], "policy_identifiers": [], "postal_code": [], "province": [],
    "street_address": [],
}  # fmt: skip
_ROLE_DURATIONS = {"ttl": 0, "max_ttl": 0, "not_before_duration": 30}
_ROLE_OTHERS = ("key_type", "key_bits", "signature_bits", "issuer_ref", "not_after")


def _key_params(key_type: str, key_bits: int) -> tuple[str, int]:
    """Validate a key type and size, filling Vault's default size."""
    if key_type == "rsa":
        key_bits = key_bits or 2048
        if key_bits not in _RSA_BITS:
            raise _bad(f"unsupported bit length for RSA key: {key_bits}")
    elif key_type == "ec":
        key_bits = key_bits or 256
        if key_bits not in _CURVES:
            raise _bad(f"unsupported bit length for EC key: {key_bits}")
    elif key_type != "any":
        raise _bad(f"unknown key type: {key_type}")
    return key_type, key_bits


def _new_key(key_type: str, key_bits: int) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    return ec.generate_private_key(_CURVES[key_bits]())


def _glob(pattern: str, name: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name, re.DOTALL) is not None


def _idna_hostname(name: str) -> str | None:
    """The ASCII form of ``name`` when it is a valid hostname, else None."""
    try:
        converted = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return converted if _HOSTNAME.match(converted) else None


def _name_allowed(role: dict[str, Any], name: str) -> bool:
    """Vault's validateNames for one DNS name or email address."""
    reduced, is_email, is_wildcard, wildcard_label = name, False, False, ""
    if "@" in reduced:
        parts = reduced.split("@")
        if len(parts) != 2:
            return False
        reduced, is_email = parts[1], True
    email_domain = reduced
    if "*" in reduced:
        is_wildcard = True
        if not role["allow_wildcard_certificates"] or reduced.count("*") > 1 or is_email:
            return False
        wildcard_label, _, reduced = reduced.partition(".")
    if role["enforce_hostnames"]:
        if reduced and _idna_hostname(reduced) is None:
            return False
        if is_wildcard and not _WILDCARD_LABEL.match(wildcard_label):
            return False
    if role["allow_any_name"]:
        return True
    if role["allow_localhost"]:
        if reduced in ("localhost", "localdomain"):
            return True
        if role["allow_subdomains"] and reduced.endswith((".localhost", ".localdomain")):
            return True
    for domain in filter(None, role["allowed_domains"]):
        bare = name.lower() == domain.lower() or (
            is_email and email_domain.lower() == domain.lower()
        )
        if role["allow_bare_domains"] and bare:
            return True
        if role["allow_subdomains"] and (
            reduced.endswith("." + domain) or (is_wildcard and reduced.lower() == domain.lower())
        ):
            return True
        if role["allow_glob_domains"] and "*" in domain and _glob(domain, name):
            return True
    return False


def _common_name_allowed(role: dict[str, Any], cn: str) -> bool:
    validations = role["cn_validations"]
    if validations == ["disabled"]:
        return True
    if not _name_allowed(role, cn):
        return False
    return not validations or ("email" if "@" in cn else "hostname") in validations


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def _serial(cert: x509.Certificate) -> str:
    digits = format(cert.serial_number, "x")
    digits = "0" * (len(digits) % 2) + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


@dataclass
class CertSpec:
    """What goes into a certificate once a request has passed the role's checks."""

    cn: str
    dns: list[str]
    emails: list[str]
    ips: list[IpAddress]
    organization: list[str]
    ou: list[str]
    not_after: datetime
    not_before_duration: int
    warnings: list[str]


@dataclass
class Issuer:
    """A CA certificate and its key inside one PKI mount."""

    id: str
    key_id: str
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return _pem(self.cert)


@dataclass
class StoredCert:
    """An issued certificate as cert/<serial> and revoke see it."""

    cert: x509.Certificate
    issuer_id: str
    revoked_at: datetime | None = None


def _build_certificate(
    spec: CertSpec,
    public_key: Any,
    signer: PrivateKey,
    issuer: x509.Certificate | None,
    *,
    key_usage: list[str],
    ext_key_usage: list[x509.ObjectIdentifier],
    ca: bool,
    basic_constraints: bool = False,
) -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organization]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in spec.ou]
    if spec.cn:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.cn))
    subject = x509.Name(attributes)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    issuer_ski = (
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if issuer
        else ski
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(seconds=spec.not_before_duration))
        .not_valid_after(spec.not_after.replace(microsecond=0))
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if ca or basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    usages = {_KEY_USAGES[u.lower()] for u in key_usage if u.lower() in _KEY_USAGES}
    if usages:
        flags = {name: name in usages for name in _KEY_USAGES.values()}
        if not flags["key_agreement"]:
            flags["encipher_only"] = flags["decipher_only"] = False
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if ext_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext_key_usage), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    names += [x509.RFC822Name(e) for e in spec.emails]
    names += [x509.IPAddress(ip) for ip in spec.ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not spec.cn)
    return builder.sign(signer, _hash_for(signer))


class PkiBackend(Backend):
    """PKI secrets engine: root generation, roles, sign/issue, CA reads, revoke."""

    mount_type = "pki"

    def __init__(self, mount: Mount) -> None:
        super().__init__()
        self.mount = mount
        self.issuers: dict[str, Issuer] = {}
        self.default_issuer: str | None = None
        self.roles: dict[str, dict[str, Any]] = {}
        self.certs: dict[str, StoredCert] = {}
        self.routes = [
            _route(r"root/generate/(internal|exported)", update=self._generate_root),
            _route(r"roles", list=self._list_roles),
            _route(
                r"roles/([^/]+)",
                exists=lambda name: name in self.roles,
                read=self._read_role,
                update=self._write_role,
                delete=self._delete_role,
            ),
            _route(r"sign/([^/]+)", update=self._sign),
            _route(r"issue/([^/]+)", update=self._issue),
            _route(r"ca/pem", read=self._ca_pem),
            _route(r"ca_chain", read=self._ca_pem),
            _route(r"cert/ca", read=self._cert_ca),
            _route(r"cert/ca_chain", read=self._cert_ca),
            _route(r"certs", list=self._list_certs),
            _route(r"cert/([^/]+)", read=self._read_cert),
            _route(r"revoke", update=self._revoke),
        ]

    # -- issuers ------------------------------------------------------------------------------

    def _issuer(self) -> Issuer:
        if self.default_issuer is None:
            raise _bad("no default issuer currently configured")
        return self.issuers[self.default_issuer]

    def _generate_root(self, call: Call, kind: str) -> Resp:
        data = call.data
        key_type, key_bits = _key_params(
            str(data.get("key_type") or "rsa"), _get(data, "key_bits", _as_int, 0)
        )
        if key_type == "any":
            raise _bad('key_type "any" is not allowed for a root certificate')
        role = self._role_from(
            {
                "ttl": data.get("ttl"),
                "organization": data.get("organization"),
                "ou": data.get("ou"),
                "allow_any_name": True,
                "enforce_hostnames": False,
                "cn_validations": ["disabled"],
                "use_csr_common_name": False,
                "use_csr_sans": False,
                "key_type": key_type,
                "key_bits": key_bits,
            }
        )
        spec = self._spec(role, data, csr=None, issuer=None)
        key = _new_key(key_type, key_bits)
        cert = _build_certificate(
            spec,
            key.public_key(),
            key,
            None,
            key_usage=["CertSign", "CRLSign"],
            ext_key_usage=[],
            ca=True,
        )
        issuer = Issuer(str(uuid.uuid4()), str(uuid.uuid4()), cert, key)
        self.issuers[issuer.id] = issuer
        if self.default_issuer is None:
            self.default_issuer = issuer.id
        self.certs[_serial(cert)] = StoredCert(cert, issuer.id)
        result = {
            "certificate": issuer.pem,
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "issuer_id": issuer.id,
            "issuer_name": "",
            "issuing_ca": issuer.pem,
            "key_id": issuer.key_id,
            "key_name": "",
            "serial_number": _serial(cert),
        }
        if kind == "exported":
            result.update(self._private_key_fields(key, data))
        return Resp(result, warnings=spec.warnings)

    def _ca_pem(self, call: Call) -> Raw:
        if self.default_issuer is None:
            return Raw(204, PEM_CHAIN, b"")
        return Raw(200, PEM_CHAIN, (self._issuer().pem + "\n").encode())

    def _cert_ca(self, call: Call) -> Resp | None:
        if self.default_issuer is None:
            return None
        issuer = self._issuer()
        return Resp(
            {
                "certificate": issuer.pem,
                "ca_chain": [issuer.pem],
                "issuer_id": issuer.id,
                "revocation_time": 0,
                "revocation_time_rfc3339": "",
            }
        )

    # -- roles --------------------------------------------------------------------------------

    def _role_from(self, data: dict[str, Any]) -> dict[str, Any]:
        """A complete role from request fields and Vault's defaults, validated."""
        role: dict[str, Any] = {}
        for name, default in _ROLE_BOOLS.items():
            role[name] = _get(data, name, _as_bool, default)
        for name, default in _ROLE_LISTS.items():
            role[name] = _get(data, name, _as_list, list(default))
        for name, default in _ROLE_DURATIONS.items():
            role[name] = _get(data, name, _as_duration, default)
        role["key_type"], role["key_bits"] = _key_params(
            str(data.get("key_type") or "rsa"), _get(data, "key_bits", _as_int, 0)
        )
        role["signature_bits"] = _get(data, "signature_bits", _as_int, 0)
        role["issuer_ref"] = str(data.get("issuer_ref") or "default")
        role["not_after"] = str(data.get("not_after") or "")
        if role["max_ttl"] and role["ttl"] > role["max_ttl"]:
            raise _bad('"ttl" value must be less than "max_ttl" value')
        return dict(sorted(role.items()))

    def _list_roles(self, call: Call) -> Resp:
        return Resp({"keys": sorted(self.roles)})

    def _read_role(self, call: Call, name: str) -> Resp | None:
        return Resp(self.roles[name]) if name in self.roles else None

    def _write_role(self, call: Call, name: str) -> Resp:
        known = {*_ROLE_BOOLS, *_ROLE_LISTS, *_ROLE_DURATIONS, *_ROLE_OTHERS, "name"}
        self.roles[name] = self._role_from(call.data)
        ignored = sorted(set(call.data) - known)
        warnings = [f"Endpoint ignored these unrecognized parameters: [{' '.join(ignored)}]"]
        return Resp(self.roles[name], warnings=warnings if ignored else [])

    def _delete_role(self, call: Call, name: str) -> None:
        self.roles.pop(name, None)

    def _role(self, name: str) -> dict[str, Any]:
        if name not in self.roles:
            raise _bad(f"unknown role: {name}")
        return self.roles[name]

    # -- sign / issue -------------------------------------------------------------------------

    def _spec(
        self,
        role: dict[str, Any],
        data: dict[str, Any],
        csr: x509.CertificateSigningRequest | None,
        issuer: Issuer | None,
    ) -> CertSpec:
        """Vault's generateCreationBundle: names, their checks, and the TTL."""
        cn = ""
        if csr is not None and role["use_csr_common_name"]:
            attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(attrs[0].value) if attrs else ""
        if not cn:
            cn = str(data.get("common_name") or "")
            if not cn and role["require_cn"]:
                raise _bad(_REQUIRE_CN)
        from_csr = csr is not None and role["use_csr_sans"]
        sans = self._csr_sans(csr) if from_csr and csr is not None else None
        dns = list(sans.get_values_for_type(x509.DNSName)) if sans else []
        emails = list(sans.get_values_for_type(x509.RFC822Name)) if sans else []
        extra = [cn] if cn and not _get(data, "exclude_cn_from_sans", _as_bool, False) else []
        if not from_csr:
            extra += sorted(set(_as_list(data.get("alt_names"), "alt_names")))
        for name in extra:
            if "@" in name:
                emails.append(name)
            elif (converted := _idna_hostname(name)) is not None:
                dns.append(converted)
        if cn and not _common_name_allowed(role, cn):
            raise _bad(f"common name {cn} not allowed by this role")
        for name in dns:
            if not _name_allowed(role, name):
                raise _bad(f"subject alternate name {name} not allowed by this role")
        for name in emails:
            if not _name_allowed(role, name):
                raise _bad(f"email address {name} not allowed by this role")
        ips = self._ip_sans(role, data, sans, from_csr)
        ttl = _get(data, "ttl", _as_duration, 0) or role["ttl"]
        max_ttl = role["max_ttl"] or self.mount.effective_max_ttl
        ttl = ttl or self.mount.effective_default_ttl
        warnings = []
        if ttl > max_ttl:
            warnings.append(
                f'TTL "{_go_duration(ttl)}" is longer than permitted maxTTL '
                f'"{_go_duration(max_ttl)}", so maxTTL is being used'
            )
            ttl = max_ttl
        not_after = _now() + timedelta(seconds=ttl)
        if issuer is not None and not_after > issuer.cert.not_valid_after_utc:
            raise _bad(
                f"cannot satisfy request, as TTL would result in notAfter of {_rfc3339(not_after)}"
                " that is beyond the expiration of the CA certificate at "
                f"{_rfc3339(issuer.cert.not_valid_after_utc)}"
            )
        return CertSpec(
            cn=cn,
            dns=sorted(set(dns)),
            emails=sorted(set(emails)),
            ips=ips,
            organization=list(dict.fromkeys(role["organization"])),
            ou=list(dict.fromkeys(role["ou"])),
            not_after=not_after,
            not_before_duration=role["not_before_duration"],
            warnings=warnings,
        )

    @staticmethod
    def _csr_sans(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
        try:
            return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None

    @staticmethod
    def _ip_sans(
        role: dict[str, Any],
        data: dict[str, Any],
        sans: x509.SubjectAlternativeName | None,
        from_csr: bool,
    ) -> list[IpAddress]:
        if from_csr:
            ips = list(sans.get_values_for_type(x509.IPAddress)) if sans else []
            if ips and not role["allow_ip_sans"]:
                raise _bad(
                    "IP Subject Alternative Names are not allowed in this role, "
                    "but was provided some via CSR"
                )
            if sans and sans.get_values_for_type(x509.UniformResourceIdentifier):
                raise _bad(
                    "URI Subject Alternative Names are not allowed in this role, "
                    "but were provided via CSR"
                )
            return [ip for ip in ips if isinstance(ip, IpAddress)]
        requested = _as_list(data.get("ip_sans"), "ip_sans")
        if requested and not role["allow_ip_sans"]:
            raise _bad(
                "IP Subject Alternative Names are not allowed in this role, "
                f"but was provided [{' '.join(requested)}]"
            )
        parsed = []
        for value in requested:
            try:
                parsed.append(ipaddress.ip_address(value))
            except ValueError:
                raise _bad(f'the value "{value}" is not a valid IP address') from None
        return parsed

    def _leaf(
        self, role: dict[str, Any], spec: CertSpec, public_key: Any, issuer: Issuer
    ) -> dict[str, Any]:
        ekus = [
            oid
            for flag, oid in (
                ("server_flag", ExtendedKeyUsageOID.SERVER_AUTH),
                ("client_flag", ExtendedKeyUsageOID.CLIENT_AUTH),
                ("code_signing_flag", ExtendedKeyUsageOID.CODE_SIGNING),
                ("email_protection_flag", ExtendedKeyUsageOID.EMAIL_PROTECTION),
            )
            if role[flag]
        ]
        ekus += [
            _EXT_KEY_USAGES[u.lower()]
            for u in role["ext_key_usage"]
            if u.lower() in _EXT_KEY_USAGES
        ]
        ekus += [x509.ObjectIdentifier(oid) for oid in role["ext_key_usage_oids"]]
        cert = _build_certificate(
            spec,
            public_key,
            issuer.key,
            issuer.cert,
            key_usage=role["key_usage"],
            ext_key_usage=list(dict.fromkeys(ekus)),
            ca=False,
            basic_constraints=role["basic_constraints_valid_for_non_ca"],
        )
        if not role["no_store"]:
            self.certs[_serial(cert)] = StoredCert(cert, issuer.id)
        return {
            "certificate": _pem(cert),
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "issuing_ca": issuer.pem,
            "ca_chain": [issuer.pem],
            "serial_number": _serial(cert),
        }

    @staticmethod
    def _check_format(data: dict[str, Any]) -> None:
        fmt = str(data.get("format") or "pem")
        if fmt != "pem":
            raise _bad(f'the stand-in supports format "pem" only, not "{fmt}"')

    @staticmethod
    def _parse_csr(text: Any) -> x509.CertificateSigningRequest:
        if not text:
            raise _bad('"csr" is empty')
        if "-----BEGIN" not in str(text):
            raise _bad("csr contains no data")
        try:
            csr = x509.load_pem_x509_csr(str(text).encode())
        except ValueError as exc:
            raise _bad(f"certificate request could not be parsed: {exc}") from None
        if not csr.is_signature_valid:
            raise _bad("request signature invalid")
        return csr

    @staticmethod
    def _check_csr_key(role: dict[str, Any], public_key: Any) -> None:
        if isinstance(public_key, rsa.RSAPublicKey):
            actual, bits = "rsa", public_key.key_size
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            actual, bits = "ec", public_key.curve.key_size
        else:
            raise _bad(f"role requires keys of type {role['key_type']}")
        wanted = role["key_type"]
        if wanted not in ("any", actual):
            raise _bad(f"role requires keys of type {wanted}")
        minimum = role["key_bits"] if wanted != "any" else (2048 if actual == "rsa" else 224)
        if bits < minimum:
            raise _bad(
                f"role requires a minimum of a {minimum}-bit key, but CSR's key is {bits} bits"
            )

    def _sign(self, call: Call, role_name: str) -> Resp:
        role = self._role(role_name)
        issuer = self._issuer()
        self._check_format(call.data)
        csr = self._parse_csr(call.data.get("csr"))
        self._check_csr_key(role, csr.public_key())
        spec = self._spec(role, call.data, csr, issuer)
        return Resp(self._leaf(role, spec, csr.public_key(), issuer), warnings=spec.warnings)

    def _issue(self, call: Call, role_name: str) -> Resp:
        role = self._role(role_name)
        if role["key_type"] == "any":
            raise _bad('role key type "any" not allowed for issuing certificates, only signing')
        self._check_format(call.data)
        issuer = self._issuer()
        spec = self._spec(role, call.data, None, issuer)
        key = _new_key(role["key_type"], role["key_bits"])
        result = self._leaf(role, spec, key.public_key(), issuer)
        result.update(self._private_key_fields(key, call.data))
        return Resp(result, warnings=spec.warnings)

    @staticmethod
    def _private_key_fields(key: PrivateKey, data: dict[str, Any]) -> dict[str, str]:
        pkcs8 = str(data.get("private_key_format") or "der") == "pkcs8"
        fmt = serialization.PrivateFormat
        text = key.private_bytes(
            serialization.Encoding.PEM,
            fmt.PKCS8 if pkcs8 else fmt.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
        return {"private_key": text.strip(), "private_key_type": kind}

    # -- stored certificates ------------------------------------------------------------------

    @staticmethod
    def _normalise_serial(serial: str) -> str:
        return serial.strip().lower().replace("-", ":")

    def _list_certs(self, call: Call) -> Resp:
        return Resp({"keys": sorted(self.certs)})

    def _read_cert(self, call: Call, serial: str) -> Resp | None:
        stored = self.certs.get(self._normalise_serial(serial))
        if stored is None:
            return None
        revoked = stored.revoked_at
        return Resp(
            {
                "certificate": _pem(stored.cert),
                "issuer_id": stored.issuer_id,
                "revocation_time": int(revoked.timestamp()) if revoked else 0,
                "revocation_time_rfc3339": _rfc3339(revoked) if revoked else "",
            }
        )

    def _revoke(self, call: Call) -> Resp:
        serial = self._normalise_serial(str(call.data.get("serial_number") or ""))
        stored = self.certs.get(serial)
        if stored is None:
            raise _bad(f"certificate with serial {serial} not found.")
        if any(_serial(issuer.cert) == serial for issuer in self.issuers.values()):
            raise _bad(f"adding issuer (id: {stored.issuer_id}) to its own CRL is not allowed")
        stored.revoked_at = stored.revoked_at or _now()
        return Resp(
            {
                "revocation_time": int(stored.revoked_at.timestamp()),
                "revocation_time_rfc3339": _rfc3339(stored.revoked_at),
                "state": "revoked",
            }
        )


# ---------------------------------------------------------------------------------------------
# the core: authentication, ACL, routing, envelopes
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# HTTP server, public API, CLI
# ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], core: Core, verbose: bool) -> None:
        super().__init__(address, _RequestHandler)
        self.core = core
        self.verbose = verbose


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        reply = self.server.core.handle(self.command, url.path, url.query, self.headers, body)
        self.send_response(reply.status)
        if reply.status != 204:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.status != 204:
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class StandinVault:
    """A running stand-in: ``url``, ``shutdown()``, and ``seal()``/``unseal()`` for tests."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def seal(self) -> None:
        """Seal the stand-in, as ``vault operator seal`` would."""
        with self._server.core.lock:
            self._server.core.sealed = True

    def unseal(self) -> None:
        """Unseal the stand-in."""
        with self._server.core.lock:
            self._server.core.sealed = False

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(host: str, port: int, root_token: str, *, verbose: bool = False) -> StandinVault:
    """Start the stand-in on host:port (0 picks a free port) in a daemon thread."""
    server = _Server((host, port), Core(root_token), verbose)
    thread = threading.Thread(target=server.serve_forever, name="vault-standin", daemon=True)
    thread.start()
    return StandinVault(server, thread)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Stand-in for HashiCorp Vault, lab/test only.")
    parser.add_argument("--listen", default="127.0.0.1:8200", help="host:port to listen on")
    parser.add_argument("--root-token", required=True, help="the root token to accept")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    vault = serve(host or "127.0.0.1", int(port), args.root_token, verbose=True)
    print(f"vault stand-in listening on {vault.url}", flush=True)
    stop.wait()
    vault.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
