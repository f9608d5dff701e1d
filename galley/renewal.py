"""What each host renews by itself, and with which credential (issue 17).

A host renews its certificates with no operator present: a systemd timer runs a shell script
(`galley.host.renewal`) that logs in to Vault's TLS certificate auth method with the host's
own *host identity* certificate (CN = the host's name, from the ``host`` mount, whose CA only
Vault's cert auth trusts) and gets a short-lived token whose policy, ``<cluster>-renew-<host>``,
may call exactly this host's renewal roles with exactly this host's names. Each renewal role
(``renew-<host>-<stem>``) pins the certificate's CN, DNS names, IP addresses (as /32 or /128
CIDRs) and organization; the policy pins the same request parameters, so asking for anything
else is refused with 403 before the role is even consulted.

`plan` gives a host's `HostRenewal`: the Vault side (`galley.vault_setup`) writes its roles,
policy and cert-auth role; the deploy installs its script, units and identity certificate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyinfra.api.host import Host

from galley.components import certificates_of, running_on
from galley.components.model import Cert
from galley.pki import Identity, RoleSpec, mount_path, parse_duration

# The deploy signs each host's identity with this role; on the host it renews itself.
HOST_IDENTITY_ROLE = RoleSpec("host-identity", "host", ("{cluster}-*",), glob_names=True)
IDENTITY_DIR = "/etc/galley/renewal"
HOST_IDENTITY = Cert(
    "host-identity",
    IDENTITY_DIR,
    "host",
    HOST_IDENTITY_ROLE,
    lambda host: Identity(host.name),
    f"{IDENTITY_DIR}/host-ca.crt",
)
# Organizations no host credential may ever obtain (the certificate stays deploy-renewed).
FORBIDDEN_ORGANIZATIONS = frozenset({"system:masters"})


def auth_path(cluster: str) -> str:
    """Where the cluster's TLS certificate auth method is mounted (below ``auth/``)."""
    return f"{cluster}/host-cert"


def login_path(cluster: str, host: str) -> str:
    """The Vault path of ``host``'s renewal login (its host identity logs in there)."""
    return f"auth/{auth_path(cluster)}/certs/{host}"


def renewal_policy(cluster: str, host_name: str) -> str:
    """The name of the ACL policy a host's renewal token carries."""
    return f"{cluster}-renew-{host_name}"


@dataclass(frozen=True)
class RenewalCert:
    """One certificate a host renews: its files, the role that renews it, and its identity.

    ``base_role`` is the component's role, whose flags and organization the renewal role
    copies; ``units`` are the systemd units that must restart when it changes.
    """

    stem: str
    key_path: str
    cert_path: str
    ca_path: str
    mount: str
    role: str
    base_role: RoleSpec
    identity: Identity
    owner: str
    group: str
    ttl: str | None  # None: the mount's leaf TTL
    units: tuple[str, ...] = ()

    @property
    def ttl_seconds(self) -> int:
        """The lifetime it should be issued with, in seconds (0: whatever it was)."""
        return parse_duration(self.ttl) if self.ttl else 0

    @property
    def sign_path(self) -> str:
        """The Vault API path that renews it."""
        return f"{self.mount}/sign/{self.role}"

    def sign_parameters(self) -> dict[str, str | bool]:
        """The request parameters besides ``csr``, exactly as the host sends them and as the
        policy pins them (the roles take CN and SANs from these, never from the CSR)."""
        parameters: dict[str, str | bool] = {"common_name": self.identity.cn}
        if self.identity.dns_names:
            parameters["alt_names"] = ",".join(self.identity.dns_names)
        if self.identity.ip_addresses:
            parameters["ip_sans"] = ",".join(self.identity.ip_addresses)
        return parameters | {"exclude_cn_from_sans": True, "format": "pem"}

    def sign_parameters_json(self) -> str:
        """`sign_parameters` as one line of JSON."""
        return json.dumps(self.sign_parameters(), separators=(",", ":"))


@dataclass(frozen=True)
class HostRenewal:
    """Everything about one host's renewal: its certificates (the identity first), those it
    must not renew itself with why, and the names of its Vault objects."""

    host: str
    cluster: str
    certs: tuple[RenewalCert, ...]
    excluded: tuple[tuple[str, str], ...] = ()  # (certificate path, why)

    @property
    def policy(self) -> str:
        """Its renewal token's ACL policy."""
        return renewal_policy(self.cluster, self.host)

    @property
    def identity(self) -> RenewalCert:
        """Its host identity certificate: the cert-auth login credential."""
        return self.certs[0]

    def policy_paths(self) -> dict[str, dict[str, str | bool]]:
        """Each sign path the policy grants, with the parameters it pins."""
        return {cert.sign_path: cert.sign_parameters() for cert in self.certs}


def plan(host: Host) -> HostRenewal:
    """What ``host`` renews by itself: its host identity and every certificate galley keeps
    on it, except any naming a forbidden organization (``system:masters``)."""
    cluster = host.data.cluster_name
    certs = [(HOST_IDENTITY, HOST_IDENTITY.identity(host)), *certificates_of(host)]
    chosen: list[RenewalCert] = []
    excluded: list[tuple[str, str]] = []
    for cert, identity in certs:
        forbidden = FORBIDDEN_ORGANIZATIONS.intersection(identity.organization)
        if forbidden:
            excluded.append((cert.cert_path, f"names {', '.join(sorted(forbidden))}"))
            continue
        chosen.append(
            RenewalCert(
                stem=cert.stem,
                key_path=cert.key_path,
                cert_path=cert.cert_path,
                ca_path=cert.ca_path,
                mount=mount_path(cluster, cert.mount),
                role=f"renew-{host.name}-{cert.stem}",
                base_role=cert.role,
                identity=identity,
                owner=cert.owner,
                group=cert.group,
                ttl=host.data.get(cert.ttl_key),
                units=_units_reading(host, cert.cert_path),
            )
        )
    roles = [cert.role for cert in chosen]
    if len(set(roles)) != len(roles):
        raise ValueError(f"{host.name}: two certificates share a stem: {', '.join(roles)}")
    return HostRenewal(host.name, cluster, tuple(chosen), tuple(excluded))


def _units_reading(host: Host, path: str) -> tuple[str, ...]:
    """The units that restart when the certificate at ``path`` changes."""
    return tuple(
        component.unit.name
        for component in running_on(host)
        if component.unit is not None and path in component.watched(host)
    )
