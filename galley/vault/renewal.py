"""What a host may renew by itself in Vault, and with which credential.

A host renews its certificates with no operator present: a systemd timer (the cert-renewal
component, `galley.components.renewal`) logs in to Vault's TLS certificate auth method with
the host's own *host identity* certificate (CN = the host's name, from the ``host`` mount,
whose CA only Vault's cert auth trusts) and gets a short-lived token whose policy,
``<cluster>-renew-<host>``, may call exactly this host's renewal roles with exactly this host's
names. Each renewal role (``renew-<host>-<stem>``) pins the certificate's CN, DNS names, IP
addresses (as /32 or /128 CIDRs) and organization; the policy pins the same request
parameters, so asking for anything else is refused with 403 before the role is even consulted.
`HostRenewal` is one host's share; `galley.vault.setup` writes its roles, policy and login.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from galley.vault.pki import Identity, RoleSpec, parse_duration

# The deploy signs each host's identity with this role; on the host it renews itself.
HOST_IDENTITY_ROLE = RoleSpec("host-identity", "host", ("{cluster}-*",), glob_names=True)
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
