"""Secrets every apiserver shares, generated once and kept in Vault's KV v2 store.

``<cluster>/kv`` holds ``kubernetes/service-account`` (the RSA key pair that signs and
verifies service-account tokens) and ``kubernetes/encryption`` (the 32-byte secretbox key of
the EncryptionConfiguration for Secrets at rest). `bootstrap` creates them when absent and
never replaces them (check-and-set 0): rotating either is a deliberate, separate act.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field

import hvac
import hvac.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from galley.vault import VaultError, vault_errors

SERVICE_ACCOUNT = "kubernetes/service-account"
ENCRYPTION = "kubernetes/encryption"
# A new KV v2 mount answers "Upgrading from non-versioned to versioned data" for a moment.
KV_READY_TIMEOUT = 10.0


def kv_mount(cluster: str) -> str:
    """The cluster's KV v2 mount, e.g. ``lab/kv``."""
    return f"{cluster}/kv"


def api_paths(cluster: str) -> list[str]:
    """The API paths a deploy reads (KV v2 puts ``data/`` between mount and secret)."""
    return [f"{kv_mount(cluster)}/data/{name}" for name in (SERVICE_ACCOUNT, ENCRYPTION)]


@dataclass(frozen=True)
class ClusterSecrets:
    """The shared secrets, PEMs ending with a newline; the key is base64 of 32 bytes."""

    service_account_key: str = field(repr=False)
    service_account_public_key: str
    encryption_key: str = field(repr=False)


def _new_service_account() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"private_key": private.decode(), "public_key": public.decode()}


def _new_encryption_key() -> dict[str, str]:
    return {"secretbox_key": base64.b64encode(os.urandom(32)).decode()}


GENERATORS = {SERVICE_ACCOUNT: _new_service_account, ENCRYPTION: _new_encryption_key}


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


def bootstrap(client: hvac.Client, cluster: str, mounted: dict) -> list[str]:
    """Mount ``<cluster>/kv`` (KV v2) and generate the secrets that are missing.

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
    for name, generate in GENERATORS.items():
        if _read(client, cluster, name) is not None:
            continue
        with vault_errors(f"writing {mount}/{name} failed"):
            client.secrets.kv.v2.create_or_update_secret(
                path=name, secret=generate(), cas=0, mount_point=mount
            )
        changes.append(f"generated {mount}/{name}")
    return changes


def read(client: hvac.Client, cluster: str) -> ClusterSecrets:
    """The cluster's shared secrets; `VaultError` when the bootstrap has not made them."""
    found = {name: _read(client, cluster, name) for name in GENERATORS}
    missing = [name for name, value in found.items() if not value]
    if missing:
        raise VaultError(
            f"{kv_mount(cluster)} lacks {', '.join(missing)}: run `galley vault bootstrap "
            f"--cluster {cluster}` first"
        )
    service_account, encryption = found[SERVICE_ACCOUNT], found[ENCRYPTION]
    return ClusterSecrets(
        service_account_key=service_account["private_key"].strip() + "\n",
        service_account_public_key=service_account["public_key"].strip() + "\n",
        encryption_key=encryption["secretbox_key"],
    )
