"""Each host's own Vault roles: the only way any certificate on a host is signed.

Every certificate galley keeps on a host has a role of its own, ``renew-<host>-<stem>``, that
pins its CN, DNS names, IP addresses (as /32 or /128 CIDRs), organization and lifetime. Two
credentials may call it, each through a policy pinning the same request parameters (anything
else is refused with 403 before the role is even consulted):

- the deploy, with the token of the job that deploys the host (`galley.ops.vault_bootstrap`
  grants a job exactly the roles of its groups' hosts, so no job can sign another's names);
- the host itself, renewing with no operator present: a systemd timer (the cert-renewal
  component, `galley.components.renewal`) logs in to Vault's TLS certificate auth method with
  the host's *host identity* certificate (CN = the host's name, from the ``host`` mount, whose
  CA only Vault's cert auth trusts) and gets a short-lived token whose policy,
  ``<cluster>-renew-<host>``, may call exactly this host's roles.

`HostRenewal` is one host's share; `galley.vault.setup` writes its roles, policy and login.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from galley.vault.pki import Identity, RoleSpec, parse_duration

# The kind of a host's identity certificate (its names are the host's own: `HostRenewal`).
HOST_IDENTITY_ROLE = RoleSpec("host-identity", "host", ())
# Organizations no host certificate may carry (only the operator's admin credential does).
FORBIDDEN_ORGANIZATIONS = frozenset({"system:masters"})


def auth_path(cluster: str) -> str:
    """Where the cluster's TLS certificate auth method is mounted (below ``auth/``)."""
    return f"{cluster}/host-cert"


def login_path(cluster: str, host: str) -> str:
    """The Vault path of ``host``'s renewal login (its host identity logs in there)."""
    return f"auth/{auth_path(cluster)}/certs/{host}"


def host_role(host_name: str, stem: str) -> str:
    """The name of the role signing ``host_name``'s certificate ``stem`` (in its mount)."""
    return f"renew-{host_name}-{stem}"


def sign_parameters(identity: Identity) -> dict[str, str | bool]:
    """The request parameters besides ``csr`` that sign a certificate for ``identity`` with
    its host's role, exactly as the deploy and the host send them and as the policies pin
    them (the roles take CN and SANs from these, never from the CSR)."""
    parameters: dict[str, str | bool] = {"common_name": identity.cn}
    if identity.dns_names:
        parameters["alt_names"] = ",".join(identity.dns_names)
    if identity.ip_addresses:
        parameters["ip_sans"] = ",".join(identity.ip_addresses)
    return parameters | {"exclude_cn_from_sans": True, "format": "pem"}


def role_names(identity: Identity) -> dict[str, list[str]]:
    """The names a host's role for ``identity`` allows, as Vault reads them back: the CN and
    DNS names, and each address as a /32 or /128 CIDR."""
    return {
        "allowed_domains": list(dict.fromkeys((identity.cn, *identity.dns_names))),
        "allowed_ip_sans_cidr": [str(ipaddress.ip_network(ip)) for ip in identity.ip_addresses],
    }


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
        """The Vault API path that signs it."""
        return f"{self.mount}/sign/{self.role}"

    @property
    def role_path(self) -> str:
        """The Vault API path of its role (the deploy reads it to catch a stale bootstrap)."""
        return f"{self.mount}/roles/{self.role}"

    def sign_parameters(self) -> dict[str, str | bool]:
        """`sign_parameters` of its identity."""
        return sign_parameters(self.identity)

    def sign_parameters_json(self) -> str:
        """`sign_parameters` as one line of JSON."""
        return json.dumps(self.sign_parameters(), separators=(",", ":"))


@dataclass(frozen=True)
class RenewalCrl:
    """A revocation list the host keeps as Vault serves it (anyone may read it): the one of
    ``mount`` at ``path``, checked against the mount's CA at ``ca_path``."""

    path: str
    mount: str
    ca_path: str

    @property
    def api_path(self) -> str:
        """The Vault API path serving it (PEM)."""
        return f"{self.mount}/crl/pem"


@dataclass(frozen=True)
class HostRenewal:
    """Everything about one host's certificates in Vault: each one (the identity first), the
    revocation lists it keeps fresh, and the names of the host's Vault objects."""

    host: str
    cluster: str
    certs: tuple[RenewalCert, ...]
    sources: tuple[str, ...] = ()  # the networks its renewal logs in from (none: anywhere)
    crls: tuple[RenewalCrl, ...] = ()  # the revocation lists its programs check

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
