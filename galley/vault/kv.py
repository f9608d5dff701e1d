"""The cluster's values in Vault's KV v2 store (``<cluster>/kv``): a component declares each
value it reads as a `KvSecret`; `bootstrap` makes the mount and each value that is absent, and
never replaces one (check-and-set 0); `read` reads one for a deploy or an operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import hvac
import hvac.exceptions

from galley.vault.client import VaultError, vault_errors


@dataclass(frozen=True)
class KvSecret:
    """A value a component's deploy reads from the cluster's KV store (``<cluster>/kv/<name>``):
    made once by `galley vault bootstrap` with ``generate`` and never replaced (rotating one is
    a deliberate, separate act). The policies of the jobs deploying the component may read it."""

    name: str
    generate: Callable[[], dict[str, str]] = field(repr=False, compare=False)


# A new KV v2 mount answers "Upgrading from non-versioned to versioned data" for a moment.
KV_READY_TIMEOUT = 10.0


def kv_mount(cluster: str) -> str:
    """The cluster's KV v2 mount, e.g. ``lab/kv``."""
    return f"{cluster}/kv"


def read_path(cluster: str, secret: KvSecret) -> str:
    """The API path reading ``secret`` (KV v2 puts ``data/`` between mount and secret)."""
    return f"{kv_mount(cluster)}/data/{secret.name}"


def _read(client: hvac.Client, cluster: str, name: str) -> dict | None:
    with vault_errors(f"reading {kv_mount(cluster)}/{name} failed"):
        try:
            answer = client.secrets.kv.v2.read_secret_version(
                path=name, mount_point=kv_mount(cluster), raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
    return answer["data"]["data"]


def _wait_until_ready(client: hvac.Client, mount: str) -> None:
    """Wait (bounded) until the new KV v2 ``mount`` has finished its upgrade and answers."""
    deadline = time.monotonic() + KV_READY_TIMEOUT
    while True:
        try:
            client.secrets.kv.v2.read_configuration(mount_point=mount)
            return
        except hvac.exceptions.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def bootstrap(
    client: hvac.Client, cluster: str, mounted: dict, secrets: Iterable[KvSecret]
) -> list[str]:
    """Mount ``<cluster>/kv`` (KV v2) and generate each of ``secrets`` that is missing.

    ``mounted`` is Vault's list of secrets engines. Returns one line per change.
    """
    changes: list[str] = []
    mount = kv_mount(cluster)
    current = mounted.get(f"{mount}/")
    if current is None:
        with vault_errors(f"enabling the KV mount {mount} failed"):
            client.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
            _wait_until_ready(client, mount)
        changes.append(f"enabled KV v2 mount {mount}")
    elif current.get("type") != "kv" or str((current.get("options") or {}).get("version")) != "2":
        raise VaultError(f"{mount} is mounted as {current.get('type')!r}, not as KV version 2")
    for secret in secrets:
        if _read(client, cluster, secret.name) is not None:
            continue
        with vault_errors(f"writing {mount}/{secret.name} failed"):
            client.secrets.kv.v2.create_or_update_secret(
                path=secret.name, secret=secret.generate(), cas=0, mount_point=mount
            )
        changes.append(f"generated {mount}/{secret.name}")
    return changes


def read(client: hvac.Client, cluster: str, secret: KvSecret) -> dict[str, str]:
    """The value of ``secret``; `VaultError` when the bootstrap has not made it."""
    value = _read(client, cluster, secret.name)
    if not value:
        raise VaultError(
            f"{kv_mount(cluster)} lacks {secret.name}: run `galley vault bootstrap "
            f"--cluster {cluster}` first"
        )
    return value
