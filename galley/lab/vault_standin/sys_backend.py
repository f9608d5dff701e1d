"""Stand-in Vault's ``sys/`` backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from galley.lab.vault_standin.acl import parse_policy
from galley.lab.vault_standin.auth import AppRoleBackend
from galley.lab.vault_standin.kv import KvBackend
from galley.lab.vault_standin.pki import PkiBackend
from galley.lab.vault_standin.plumbing import Backend, Call, Mount, Resp, _route
from galley.lab.vault_standin.values import _as_duration, _as_list, _bad, _get

if TYPE_CHECKING:
    from galley.lab.vault_standin.core import Core


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
