"""Galley's PKI in Vault: mounts, the shape of a role, identities, signing, and the decision
whether a certificate on a host must be re-signed.

Every cluster has one PKI mount per trust domain, ``<cluster>/pki/<name>`` (``MOUNTS``), each
with a 10-year internal root CA. The components declare each kind of certificate (`RoleSpec`:
usages, organization); `galley.vault.setup` writes one role per certificate per host from it
(`galley.vault.renewal`), and the operator's own roles by name. Leaf keys are EC P-256
(``LEAF_KEY``): hosts generate them with openssl and send only a CSR; roles accept nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import hvac
import hvac.exceptions
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from galley.vault.client import VaultError, vault_errors

LEAF_KEY = {"key_type": "ec", "key_bits": 256}  # what roles accept in CSRs
CA_KEY = {"key_type": "ec", "key_bits": 384}  # the roots Vault generates (and keeps)
# Re-sign when less than this share of a certificate's lifetime is left.
# Clock skew between the operator's machine and Vault a certificate's validity may show.
TTL_SLACK = timedelta(minutes=1)
RENEW_FRACTION = 1 / 3
# A deploy re-signs for age only this late: until then renewing is the host's own timer's job
# (`galley.components.renewal`), and a deploy racing it would change what needs no change.
DEPLOY_RENEW_FRACTION = 1 / 6


@dataclass(frozen=True)
class MountSpec:
    """A PKI mount ``<cluster>/pki/<name>`` with its own root CA."""

    name: str
    ca_common_name: str  # "{cluster}" is replaced by the cluster name


@dataclass(frozen=True)
class RoleSpec:
    """A kind of certificate: its mount, usages and organization. Each host's certificate of
    a kind is signed by a role of its own with exactly its names (`galley.vault.renewal`);
    only a role Vault keeps by this name (the operator's admin) takes ``allowed_names``."""

    name: str
    mount: str
    allowed_names: tuple[str, ...] = ()
    server: bool = False
    client: bool = True
    enforce_hostnames: bool = True
    organization: tuple[str, ...] = ()
    max_ttl: str | None = None  # the longest Vault signs it for (None: the mount's leaf TTL)


# ``host``: each host's renewal credential (`galley.vault.renewal`), trusted only by Vault's
# cert auth.
MOUNTS = (
    MountSpec("etcd", "{cluster} etcd CA"),
    MountSpec("k8s", "{cluster} Kubernetes CA"),
    MountSpec("host", "{cluster} host identity CA"),
)
# The operator's credentials (keys made on the operator's machine, `galley.ops.admin`): the
# everyday one, a group RBAC binds to cluster-admin; break-glass, system:masters, which no
# RBAC change takes away, short-lived and in a policy of its own.
CLUSTER_ADMINS = "galley:cluster-admins"
ADMIN_ROLE = RoleSpec("admin", "k8s", ("admin",), organization=(CLUSTER_ADMINS,), max_ttl="24h")
BREAK_GLASS_ROLE = RoleSpec(
    "break-glass", "k8s", ("break-glass",), organization=("system:masters",), max_ttl="1h"
)
# In-cluster names of the API (the cluster domain may differ from cluster.local).
API_SERVICE_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")


def mount_path(cluster: str, mount: str) -> str:
    """The Vault path of a cluster's PKI mount, e.g. ``lab/pki/etcd``."""
    return f"{cluster}/pki/{mount}"


def parse_duration(value: str | int) -> int:
    """Seconds in a Vault duration such as ``"720h"``, ``"1h30m"``, ``"90s"`` or ``3600``."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    parts = re.fullmatch(r"((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?", value)
    if not value or parts is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 720h, 30m, 90s)")
    days, hours, minutes, seconds = (int(parts.group(i) or 0) for i in (2, 4, 6, 8))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def read_ca(client: hvac.Client, mount: str, *, missing_ok: bool = False) -> str:
    """The CA certificate(s) of ``mount`` as PEM ending with a newline ("" if none and allowed)."""
    with vault_errors(f"reading the CA of {mount} failed"):
        pem = client.secrets.pki.read_ca_certificate(mount_point=mount).strip()
    if not pem and not missing_ok:
        raise VaultError(f"{mount} has no CA yet: run galley's Vault bootstrap first")
    return pem + "\n" if pem else ""


def read_crl(client: hvac.Client, mount: str) -> str:
    """The certificate revocation list of ``mount`` as PEM ending with a newline (Vault serves
    it to anyone: ``GET <mount>/crl/pem``)."""
    with vault_errors(f"reading the CRL of {mount} failed"):
        pem = client.secrets.pki.read_crl(mount_point=mount).strip()
    if "-----BEGIN X509 CRL-----" not in pem:
        raise VaultError(f"{mount} served no CRL: run galley's Vault bootstrap first")
    return pem + "\n"


@dataclass(frozen=True)
class SignedCertificate:
    """A leaf certificate and the CA bundle that issued it, PEMs ending with a newline."""

    certificate: str
    ca_bundle: str
    warnings: tuple[str, ...] = ()


def sign(
    client: hvac.Client,
    mount: str,
    role: str,
    csr_pem: str,
    ttl: str | None = None,
    parameters: Mapping[str, str | bool] | None = None,
) -> SignedCertificate:
    """Have Vault sign a CSR with ``role`` of ``mount``: with exactly ``parameters`` (a host's
    own role: `galley.vault.renewal.sign_parameters`), else with the CSR's names and
    ``ttl``."""
    extra: dict = dict(parameters or {"format": "pem", "exclude_cn_from_sans": True})
    common_name = str(extra.pop("common_name", None) or identity_of_csr(csr_pem).cn)
    if ttl:
        extra["ttl"] = ttl
    with vault_errors(f"Vault refused to sign with role {role} of {mount}"):
        answer = client.secrets.pki.sign_certificate(
            role, csr_pem, common_name, extra_params=extra, mount_point=mount
        )
    data = answer["data"]
    chain = data.get("ca_chain") or [data["issuing_ca"]]
    return SignedCertificate(
        certificate=data["certificate"].strip() + "\n",
        ca_bundle="".join(pem.strip() + "\n" for pem in chain),
        warnings=tuple(answer.get("warnings") or ()),
    )


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: CN, DNS and IP SANs, organizations (stored sorted, unique)."""

    cn: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    organization: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ips = {str(ipaddress.ip_address(ip)) for ip in self.ip_addresses}
        object.__setattr__(self, "dns_names", tuple(sorted(set(self.dns_names))))
        object.__setattr__(self, "ip_addresses", tuple(sorted(ips)))
        object.__setattr__(self, "organization", tuple(sorted(set(self.organization))))


def load_certificate(pem: str) -> x509.Certificate:
    """The first certificate of a PEM text; ValueError when there is none."""
    return x509.load_pem_x509_certificates(pem.encode())[0]


def _identity_of(subject: x509.Name, extensions: x509.Extensions) -> Identity:
    def names(oid: x509.ObjectIdentifier) -> list[str]:
        return [str(attribute.value) for attribute in subject.get_attributes_for_oid(oid)]

    # No SAN extension means no names; cryptography >= 51 refuses an empty SAN list.
    try:
        sans = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = sans.get_values_for_type(x509.DNSName)
        ip_addresses = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ip_addresses = [], []
    return Identity(
        cn=next(iter(names(NameOID.COMMON_NAME)), ""),
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ip_addresses),
        organization=tuple(names(NameOID.ORGANIZATION_NAME)),
    )


def identity_of_csr(pem: str) -> Identity:
    """The identity a CSR asks for."""
    csr = x509.load_pem_x509_csr(pem.encode())
    return _identity_of(csr.subject, csr.extensions)


def identity_of_cert(pem: str) -> Identity:
    """The identity a certificate (the first in ``pem``) carries."""
    cert = load_certificate(pem)
    return _identity_of(cert.subject, cert.extensions)


def issued_by(cert: x509.Certificate, ca_pem: str) -> bool:
    """Whether one of the CA certificates in ``ca_pem`` signed ``cert``."""
    for ca in x509.load_pem_x509_certificates(ca_pem.encode()):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def format_duration(delta: timedelta) -> str:
    """A coarse human duration: ``30d``, ``3d 4h``, ``5h 12m``, ``7m``, ``40s``."""
    seconds = int(delta.total_seconds())
    days, hours, minutes = seconds // 86400, seconds // 3600 % 24, seconds // 60 % 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{seconds}s"


def _changed_names(cert: Identity, expected: Identity) -> str:
    changes = []
    for kind, have, want in (
        ("dns", cert.dns_names, expected.dns_names),
        ("ip", cert.ip_addresses, expected.ip_addresses),
    ):
        changes += [f"+{kind} {name}" for name in want if name not in have]
        changes += [f"-{kind} {name}" for name in have if name not in want]
    return ", ".join(changes)


def resign_reason(
    cert_pem: str | None,
    expected: Identity,
    ca_pem: str,
    now: datetime,
    *,
    public_key_pem: str | None = None,
    ttl: timedelta | None = None,
    fraction: float = RENEW_FRACTION,
) -> str | None:
    """Why the certificate must be re-signed, or None when it is fine.

    It must be issued by a CA in ``ca_pem``, carry exactly ``expected``, match the key whose
    public half is ``public_key_pem`` (when given) and have at least ``fraction`` (a third) of
    its lifetime left at ``now``. The lifetime is the longer of the certificate's own and
    ``ttl`` (the one it should have been issued with), so a certificate issued too short is
    replaced early; one valid for longer than ``ttl`` (the ttl was shortened) is replaced too.
    """
    if not cert_pem:
        return "no certificate"
    try:
        cert = load_certificate(cert_pem)
        have = identity_of_cert(cert_pem)
    except ValueError:
        return "unreadable certificate"
    if not issued_by(cert, ca_pem):
        return "issued by a different CA"
    if public_key_pem is not None:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if key != cert.public_key():
            return "certificate does not match the private key"
    if have.cn != expected.cn:
        return f"CN changed ({have.cn} -> {expected.cn})"
    if names := _changed_names(have, expected):
        return f"SANs changed ({names})"
    if have.organization != expected.organization:
        return (
            f"organization changed ({', '.join(have.organization) or 'none'} -> "
            f"{', '.join(expected.organization) or 'none'})"
        )
    left = cert.not_valid_after_utc - now
    lifetime = max(cert.not_valid_after_utc - cert.not_valid_before_utc, ttl or timedelta(0))
    if left <= timedelta(0):
        return f"expired {format_duration(-left)} ago"
    if left < lifetime * fraction:
        return (
            f"expires in {format_duration(left)}, less than 1/{round(1 / fraction)} of its "
            f"{format_duration(lifetime)} lifetime left"
        )
    if ttl and left > ttl + TTL_SLACK:
        return f"valid for {format_duration(left)}, longer than its {format_duration(ttl)} ttl"
    return None
