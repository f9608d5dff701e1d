"""Vault connection settings and a client checked before any host work starts.

The token and the AppRole secret ID never appear in a repr, a message or a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial

import hvac
import hvac.exceptions
import requests

TIMEOUT_SECONDS = 10
# sys/health codes of a node that serves requests: active, standby, DR secondary, perf standby.
_SERVING = {200, 429, 472, 473}


class VaultError(Exception):
    """A one-line, user-facing problem with Vault or its configuration."""


@dataclass(frozen=True)
class VaultSettings:
    """Where Vault is, how to log in, and the mount prefix (the cluster name).

    Authentication uses ``token`` when set, otherwise AppRole (``role_id`` + ``secret_id``).
    """

    addr: str
    mount_prefix: str
    token: str | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: str | None = field(default=None, repr=False)
    ca_cert: str | None = None

    @classmethod
    def from_data(cls, data: Mapping, env: Mapping[str, str] = os.environ) -> VaultSettings:
        """Read ``vault_*`` and ``cluster_name`` from host/group data, else ``VAULT_*`` from env.

        ``data`` only needs ``.get`` (pyinfra's ``host.data`` works). Raises `VaultError` naming
        what is missing and where to set it.
        """

        def pick(key: str, env_key: str | None) -> str | None:
            value = data.get(key) or (env.get(env_key) if env_key else None)
            return str(value) if value else None

        addr = pick("vault_addr", "VAULT_ADDR")
        token = pick("vault_token", "VAULT_TOKEN")
        role_id = pick("vault_role_id", "VAULT_ROLE_ID")
        secret_id = pick("vault_secret_id", "VAULT_SECRET_ID")
        cluster = pick("cluster_name", None)
        if not addr:
            raise VaultError(
                "Vault address is not set: set vault_addr in group data or VAULT_ADDR in the "
                "environment"
            )
        if not re.match(r"https?://[^/\s]+", addr):
            raise VaultError(f"vault_addr must be a URL like https://vault:8200, got {addr!r}")
        if not cluster:
            raise VaultError(
                "cluster_name is not set: set it in group data (it names the Vault PKI mounts)"
            )
        if not token and bool(role_id) != bool(secret_id):
            have, lack = ("role_id", "secret_id") if role_id else ("secret_id", "role_id")
            raise VaultError(
                f"vault_{have} is set but vault_{lack} is missing: set vault_{lack} in group "
                f"data or VAULT_{lack.upper()} in the environment"
            )
        if not token and not role_id:
            raise VaultError(
                "no Vault credentials: set vault_token (or VAULT_TOKEN), or vault_role_id and "
                "vault_secret_id (or VAULT_ROLE_ID and VAULT_SECRET_ID)"
            )
        return cls(
            addr=addr.rstrip("/"),
            mount_prefix=cluster,
            token=token,
            role_id=None if token else role_id,
            secret_id=None if token else secret_id,
            ca_cert=pick("vault_ca_cert", "VAULT_CACERT"),
        )


def vault_message(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error text of an hvac exception, without hvac's ", on GET <url>" tail."""
    message = exc.args[0] if exc.args and exc.args[0] else type(exc).__name__
    return str(message).strip()


@contextmanager
def vault_errors(doing: str) -> Iterator[None]:
    """Turn hvac and transport errors raised inside into `VaultError("<doing>: <reason>")`."""
    try:
        yield
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"{doing}: {vault_message(exc)}") from exc
    except requests.RequestException as exc:
        raise VaultError(f"{doing}: {_transport_reason(exc)}") from exc


def _transport_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {TIMEOUT_SECONDS}s"
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        found = re.search(r"certificate verify failed[^'\")]*", text)
        return f"TLS error: {found.group(0) if found else 'handshake failed'}"
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1).strip() if found else type(exc).__name__


def connect(settings: VaultSettings, needed_paths: dict[str, str] | None = None) -> hvac.Client:
    """Log in to Vault and check it can do the caller's work, before any host is touched.

    ``needed_paths`` maps each API path the caller will use to the capability it needs, e.g.
    ``{"lab/pki/etcd/sign/etcd-member": "update"}``. Raises one `VaultError` per problem:
    unreachable, sealed, not initialised, bad token, failed AppRole login, missing capability.
    """
    if settings.ca_cert and not os.path.isfile(settings.ca_cert):
        raise VaultError(f"vault_ca_cert {settings.ca_cert} does not exist")
    client = hvac.Client(
        url=settings.addr, verify=settings.ca_cert or True, timeout=TIMEOUT_SECONDS
    )
    _check_health(client, settings.addr)
    _log_in(client, settings)
    if needed_paths:
        _check_capabilities(client, settings.addr, needed_paths)
    return client


def lazy_client(
    settings: VaultSettings, needed_paths: dict[str, str] | None = None
) -> Callable[[], hvac.Client]:
    """A factory that runs `connect` on its first call; equal arguments share one client.

    pyinfra runs a deploy file once per host: sharing makes that one login per run.
    """
    return partial(_shared_client, settings, tuple(sorted((needed_paths or {}).items())))


@cache
def _shared_client(
    settings: VaultSettings, needed_paths: tuple[tuple[str, str], ...]
) -> hvac.Client:
    return connect(settings, dict(needed_paths))


def _check_health(client: hvac.Client, addr: str) -> None:
    try:
        response = client.sys.read_health_status(method="GET")
    except requests.RequestException as exc:
        raise VaultError(f"Vault at {addr} is unreachable: {_transport_reason(exc)}") from exc
    status = 200 if isinstance(response, dict) else response.status_code
    if status == 503:
        raise VaultError(f"Vault at {addr} is sealed: unseal it and re-run")
    if status == 501:
        raise VaultError(f"Vault at {addr} is not initialised: run `vault operator init`")
    if status not in _SERVING:
        raise VaultError(f"Vault at {addr} is not healthy: sys/health answered HTTP {status}")


def _log_in(client: hvac.Client, settings: VaultSettings) -> None:
    addr = settings.addr
    if settings.token:
        client.token = settings.token
        with vault_errors(f"Vault at {addr}: token lookup failed"):
            try:
                client.auth.token.lookup_self()
            except hvac.exceptions.Forbidden as exc:
                raise VaultError(
                    f"Vault at {addr} rejected the token (invalid or expired): set a valid one "
                    "in vault_token or VAULT_TOKEN"
                ) from exc
        return
    with vault_errors(
        f"AppRole login to Vault at {addr} failed (check vault_role_id and vault_secret_id, "
        "or VAULT_ROLE_ID and VAULT_SECRET_ID)"
    ):
        client.auth.approle.login(role_id=settings.role_id, secret_id=settings.secret_id)


def _check_capabilities(client: hvac.Client, addr: str, needed: dict[str, str]) -> None:
    with vault_errors(f"Vault at {addr}: reading the token's capabilities failed"):
        answer = client.sys.get_capabilities(paths=sorted(needed))
    granted = answer.get("data") or answer
    missing = [
        f"'{capability}' on {path}"
        for path, capability in needed.items()
        if not {"root", capability} & set(granted.get(path, ()))
    ]
    if missing:
        raise VaultError(
            f"token lacks {', '.join(missing)} (grant them with the galley deploy policy that "
            "the Vault bootstrap writes)"
        )
