"""Stand-in Vault auth methods: ``auth/token`` and AppRole."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from galley.lab.vault_standin.plumbing import Backend, Call, Resp, _route
from galley.lab.vault_standin.values import (
    SYSTEM_TTL,
    _as_bool,
    _as_duration,
    _as_int,
    _as_list,
    _bad,
    _get,
)

if TYPE_CHECKING:
    from galley.lab.vault_standin.core import Core


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
