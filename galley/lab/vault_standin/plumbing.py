"""Stand-in Vault request plumbing: tokens, calls, responses, routes, backends, mounts."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from galley.lab.vault_standin.values import SYSTEM_TTL, VERSION


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
