"""Vault connection settings and a client checked before any host work starts.

The token and the AppRole secret ID come from the environment or from files that data names,
never from inventory data itself, and never appear in a repr, a message or a log line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests

TIMEOUT_SECONDS = 10
T = TypeVar("T")
# sys/health codes of a node that serves requests: active, standby, DR secondary, perf standby.
_SERVING = {200, 429, 472, 473}
# Secrets that data must not hold; each has a ``<key>_file`` setting and a ``<KEY>`` variable.
SECRET_KEYS = ("vault_token", "vault_secret_id")
# The data keys a run's Vault connection comes from (`VaultSettings.from_data`).
DATA_KEYS = (
    "cluster_name",
    "vault_addr",
    "vault_ca_cert",
    "vault_token_file",
    "vault_role_id",
    "vault_secret_id_file",
    "vault_allow_insecure_http",
)


class VaultError(Exception):
    """A one-line, user-facing problem with Vault or its configuration."""


@dataclass(frozen=True)
class VaultSettings:
    """Where Vault is, how to log in, and the mount prefix (the cluster name).

    Authentication uses ``token`` when set, otherwise AppRole (``role_id`` + ``secret_id``).
    ``credential_source`` says where the secret came from, for messages: ``"VAULT_TOKEN"``,
    ``"vault_token_file /etc/galley/token"``, ``"the secret ID in VAULT_SECRET_ID"``.
    """

    addr: str
    mount_prefix: str
    token: str | None = field(default=None, repr=False)
    role_id: str | None = None
    secret_id: str | None = field(default=None, repr=False)
    ca_cert: str | None = None
    credential_source: str = ""

    @classmethod
    def from_data(cls, data: Mapping, env: Mapping[str, str] = os.environ) -> VaultSettings:
        """Read ``vault_*`` and ``cluster_name`` from host/group data, else ``VAULT_*`` from env.

        Secrets never come from data itself: the token and the AppRole secret ID are read from
        the files ``vault_token_file`` / ``vault_secret_id_file`` name, else from
        ``VAULT_TOKEN`` / ``VAULT_SECRET_ID``. ``data`` only needs ``.get`` (pyinfra's
        ``host.data`` works). Raises `VaultError` naming what is wrong and where to fix it.
        """

        def pick(key: str, env_key: str | None) -> str | None:
            value = data.get(key) or (env.get(env_key) if env_key else None)
            return str(value) if value else None

        for key in SECRET_KEYS:
            if data.get(key) is not None:
                raise VaultError(
                    f"{key} must not be in group or host data (`pyinfra debug-inventory` shows "
                    f"data): set {key}_file to a file holding it, or {key.upper()} in the "
                    "environment"
                )
        addr = pick("vault_addr", "VAULT_ADDR")
        cluster = pick("cluster_name", None)
        if not addr:
            raise VaultError(
                "Vault address is not set: set vault_addr in group data or VAULT_ADDR in the "
                "environment"
            )
        if not re.match(r"https?://[^/\s]+", addr):
            raise VaultError(f"vault_addr must be a URL like https://vault:8200, got {addr!r}")
        _refuse_insecure_http(addr, data)
        if not cluster:
            raise VaultError(
                "cluster_name is not set: set it in group data (it names the Vault PKI mounts)"
            )
        token = _secret(data, env, "vault_token")
        role_id = None if token else pick("vault_role_id", "VAULT_ROLE_ID")
        secret_id = None if token else _secret(data, env, "vault_secret_id")
        if not token:
            _check_approle(role_id, secret_id)
        return cls(
            addr=addr.rstrip("/"),
            mount_prefix=cluster,
            token=token[0] if token else None,
            role_id=role_id,
            secret_id=secret_id[0] if secret_id else None,
            ca_cert=pick("vault_ca_cert", "VAULT_CACERT"),
            credential_source=token[1] if token else f"the secret ID in {secret_id[1]}",
        )


def _secret(data: Mapping, env: Mapping[str, str], key: str) -> tuple[str, str] | None:
    """The secret ``key`` and where it came from: the file ``<key>_file`` names, else ``<KEY>``."""
    path = data.get(f"{key}_file")
    if path:
        try:
            value = Path(str(path)).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise VaultError(f"{key}_file {path} cannot be read: {reason}") from exc
        if not value:
            raise VaultError(f"{key}_file {path} is empty")
        return value, f"{key}_file {path}"
    value = env.get(key.upper())
    return (value, key.upper()) if value else None


def _check_approle(role_id: str | None, secret_id: tuple[str, str] | None) -> None:
    if not role_id and not secret_id:
        raise VaultError(
            "no Vault credentials: set vault_token_file (or VAULT_TOKEN), or vault_role_id "
            "(or VAULT_ROLE_ID) and vault_secret_id_file (or VAULT_SECRET_ID)"
        )
    if not secret_id:
        raise VaultError(
            "vault_role_id is set but the AppRole secret ID is missing: set "
            "vault_secret_id_file in group data or VAULT_SECRET_ID in the environment"
        )
    if not role_id:
        raise VaultError(
            "an AppRole secret ID is set but vault_role_id is missing: set vault_role_id in "
            "group data or VAULT_ROLE_ID in the environment"
        )


def _refuse_insecure_http(addr: str, data: Mapping) -> None:
    """Plain HTTP only to this machine, unless data sets ``vault_allow_insecure_http = True``."""
    host = urlsplit(addr).hostname or ""
    if urlsplit(addr).scheme != "http" or _is_loopback(host):
        return
    if data.get("vault_allow_insecure_http") is not True:
        raise VaultError(
            f"vault_addr {addr} is plain HTTP to another machine: the token would cross the "
            "network unencrypted; use https://, or set vault_allow_insecure_http = True"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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

    ``needed_paths`` maps each API path the caller will use to the capabilities it needs
    (comma-separated), e.g. ``{"lab/pki/etcd/sign/etcd-member": "update"}``. Raises one
    `VaultError` per problem: unreachable, sealed, not initialised, bad token, failed AppRole
    login, missing capability.
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
    addr, source = settings.addr, settings.credential_source
    if settings.token:
        client.token = settings.token
        with vault_errors(f"Vault at {addr}: token lookup failed"):
            try:
                client.auth.token.lookup_self()
            except hvac.exceptions.Forbidden as exc:
                raise VaultError(
                    f"Vault at {addr} rejected the token from {source} (invalid or expired): "
                    "give a valid one there"
                ) from exc
        return
    with vault_errors(
        f"AppRole login to Vault at {addr} failed (check vault_role_id or VAULT_ROLE_ID, and "
        f"{source})"
    ):
        client.auth.approle.login(role_id=settings.role_id, secret_id=settings.secret_id)


def _check_capabilities(client: hvac.Client, addr: str, needed: dict[str, str]) -> None:
    with vault_errors(f"Vault at {addr}: reading the token's capabilities failed"):
        answer = client.sys.get_capabilities(paths=sorted(needed))
    granted = answer.get("data") or answer
    missing = [
        f"'{capability}' on {path}"
        for path, capabilities in needed.items()
        for capability in capabilities.split(",")
        if not {"root", capability} & set(granted.get(path, ()))
    ]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise VaultError(
            f"token lacks {', '.join(missing[:3])}{more} (use a token with the policy of this "
            "job that `galley vault bootstrap --inventory` writes: <cluster>-etcd, "
            "-control-plane, -workers, -monitoring or -deploy; hosts added since the last "
            "bootstrap have no roles yet: run it again)"
        )


def once_per_client(client: hvac.Client, key: tuple, fetch: Callable[[], T]) -> T:
    """``fetch()`` the first time ``key`` is asked of ``client``, the same value afterwards.

    A deploy shares one client per run (`lazy_client`): what every host reads from Vault
    (a mount's CA, the shared secrets) is then read once per run, not once per host.
    """
    cache = client.__dict__.setdefault("_galley_once", {})
    if key not in cache:
        cache[key] = fetch()
    return cache[key]
