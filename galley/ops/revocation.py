"""Revoking a host's certificates in Vault, and proving it: the serial in the mount's CRL.

Vault names a certificate by its serial (``39:dd:...``, lowercase hex bytes). A host leaving
the cluster has its certificates revoked by the serials read on the host and by a search of
the mount (``LIST <mount>/certs``, then each certificate): every unexpired, unrevoked
certificate whose identity names the node (CN ``NAME`` or ``system:node:NAME``, or a DNS SAN
``NAME``). The search finds what the host no longer holds (a certificate it renewed, still
valid) and, for a dead droplet, everything it can; a certificate of a shared identity
(``system:kube-proxy``) names no host and is found only on the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import hvac
import hvac.exceptions
from cryptography import x509

from galley.vault.client import VaultError, vault_errors
from galley.vault.pki import (
    MOUNTS,
    Identity,
    identity_of_cert,
    load_certificate,
    mount_path,
    read_crl,
)
from galley.vault.renewal import login_path


@dataclass(frozen=True)
class Issued:
    """One certificate: the mount that issued it, its serial as Vault writes it, its CN."""

    mount: str
    serial: str
    cn: str


def vault_serial(number: int) -> str:
    """A serial number as Vault prints it: ``39:dd:2e:...``."""
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return ":".join(f"{byte:02x}" for byte in raw)


def issued(mount: str, pem: str) -> Issued:
    """The certificate ``pem`` (the first in it) as issued by ``mount``."""
    return Issued(
        mount, vault_serial(load_certificate(pem).serial_number), identity_of_cert(pem).cn
    )


def revocation_paths(cluster: str) -> dict[str, str]:
    """What revoking a host's certificates needs of Vault, per mount: list and read the
    certificates, revoke (the CRL itself is unauthenticated); and deleting the host's
    renewal login (Vault's cert auth does not read the PKI mounts' CRLs)."""
    paths: dict[str, str] = {}
    for mount in MOUNTS:
        path = mount_path(cluster, mount.name)
        paths |= {f"{path}/certs": "list", f"{path}/cert/*": "read", f"{path}/revoke": "update"}
    return paths | {login_path(cluster, "*"): "delete"}


def delete_login(client: hvac.Client, path: str) -> None:
    """Delete a host's renewal login (gone already is fine)."""
    with vault_errors(f"deleting {path} failed"):
        client.delete(path)


def names_node(identity: Identity, node: str) -> bool:
    """Whether a certificate's identity is the node's own (not a shared one)."""
    return identity.cn in (node, f"system:node:{node}") or node in identity.dns_names


def issued_to(client: hvac.Client, mount: str, node: str, now: datetime) -> list[Issued]:
    """The unexpired, unrevoked certificates of ``mount`` whose identity names ``node``."""
    with vault_errors(f"listing the certificates of {mount} failed"):
        try:
            keys = client.secrets.pki.list_certificates(mount_point=mount)["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            return []
    found = []
    for key in keys:
        with vault_errors(f"reading certificate {key} of {mount} failed"):
            data = client.secrets.pki.read_certificate(key, mount_point=mount)["data"]
        if data.get("revocation_time"):
            continue
        pem = data["certificate"]
        if load_certificate(pem).not_valid_after_utc <= now:
            continue
        if names_node(identity_of_cert(pem), node):
            found.append(issued(mount, pem))
    return found


def revoke(client: hvac.Client, certificates: Iterable[Issued]) -> None:
    """Revoke each certificate (again is fine: Vault answers with the first revocation)."""
    for cert in certificates:
        with vault_errors(f"revoking {cert.serial} ({cert.cn}) in {cert.mount} failed"):
            client.secrets.pki.revoke_certificate(cert.serial, mount_point=cert.mount)


def revoke_checked(client: hvac.Client, certificates: list[Issued]) -> None:
    """Revoke each certificate, then find each serial on its mount's CRL (VaultError
    naming those that are not)."""
    revoke(client, certificates)
    listed = {mount: revoked_serials(client, mount) for mount in {c.mount for c in certificates}}
    missing = [c for c in certificates if c.serial not in listed[c.mount]]
    if missing:
        raise VaultError(
            "revoked but not on the CRL: " + ", ".join(f"{c.serial} ({c.cn})" for c in missing)
        )


def retire_host(client: hvac.Client, cluster: str, host: str, mounts: Sequence[str]) -> list[str]:
    """Revoke every unexpired certificate of ``mounts`` naming ``host`` (checked on the CRLs);
    with the host identity mount among them, delete its renewal login too. A line for each."""
    now = datetime.now(UTC)
    certificates = [cert for mount in mounts for cert in issued_to(client, mount, host, now)]
    revoke_checked(client, certificates)
    lines = [f"revoked {c.serial} ({c.cn}, {c.mount}): on the CRL" for c in certificates]
    if mount_path(cluster, "host") in mounts:
        delete_login(client, login_path(cluster, host))
        lines.append(f"deleted its renewal login {login_path(cluster, host)}")
    return lines


def revoked_serials(client: hvac.Client, mount: str) -> set[str]:
    """The serials on the mount's CRL (``GET <mount>/crl/pem``), as Vault writes them."""
    pem = read_crl(client, mount)
    try:
        crl = x509.load_pem_x509_crl(pem.encode())
    except ValueError as exc:
        raise VaultError(f"the CRL of {mount} does not parse: {exc}") from None
    return {vault_serial(entry.serial_number) for entry in crl}
