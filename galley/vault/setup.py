"""Vault's side of a cluster, written idempotently: the PKI mounts and root CAs, the operator's
roles, the shared values in KV, the ACL policies, and each host's own roles (one per
certificate, used by the deploy and by the host's renewal) with its renewal policy and login
through the TLS certificate auth method. `bootstrap` applies a `Plan` (what the components declare:
`galley.ops.vault_bootstrap` makes it); a re-run changes nothing and says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hvac
import hvac.exceptions

from galley.vault import kv
from galley.vault.client import VaultError, vault_errors
from galley.vault.kv import KvSecret
from galley.vault.pki import CA_KEY, LEAF_KEY, MOUNTS, RoleSpec, mount_path, parse_duration, read_ca
from galley.vault.renewal import HostRenewal, RenewalCert, auth_path, login_path, role_names

# A host's renewal token: short-lived, not stored (batch), nothing but its own policy.
RENEWAL_TOKEN_TTL = 300


@dataclass(frozen=True)
class Policy:
    """An ACL policy: ``paths`` with their capabilities (comma-separated), and ``signs``: sign
    paths it may call only with exactly these parameters besides the CSR."""

    paths: Mapping[str, str] = field(default_factory=dict)
    signs: Mapping[str, Mapping[str, str | bool]] = field(default_factory=dict)

    def capabilities(self) -> dict[str, str]:
        """Every path it grants with its capabilities (a sign path: update)."""
        return dict(self.paths) | dict.fromkeys(self.signs, "update")


@dataclass(frozen=True)
class Plan:
    """What a cluster needs in Vault: the shared roles (hosts' own roles come from
    `PkiOptions.renewal_hosts`), roles galley wrote once and deletes now, the KV values it
    reads, and each ACL policy by name."""

    roles: tuple[RoleSpec, ...]
    secrets: tuple[KvSecret, ...]
    policies: Mapping[str, Policy]
    retired_roles: tuple[RoleSpec, ...] = ()


@dataclass(frozen=True)
class PkiOptions:
    """Tunables of the bootstrap. ``renewal_hosts``: every host of the cluster (from an
    inventory); their own roles, renewal policies and logins are written and any other
    host's removed."""

    leaf_ttl: str = "720h"
    leaf_max_ttl: str = "720h"
    ca_ttl: str = "87600h"
    renewal_hosts: tuple[HostRenewal, ...] = ()


def repr_hcl(text: str) -> str:
    """A string literal in HCL."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_policy(name: str, policy: Policy) -> str:
    """The HCL of policy ``name`` granting exactly ``policy``."""
    blocks = [f"# galley policy {name}: written by `galley vault bootstrap`"]
    for path, capabilities in policy.paths.items():
        listed = ", ".join(repr_hcl(capability) for capability in capabilities.split(","))
        blocks.append(f'path "{path}" {{\n  capabilities = [{listed}]\n}}')
    for path, parameters in policy.signs.items():
        pinned = "".join(
            f"\n    {repr_hcl(key)} = [{json.dumps(value)}]" for key, value in parameters.items()
        )
        blocks.append(
            f'path "{path}" {{\n  capabilities = ["update"]\n'
            f'  allowed_parameters = {{\n    "csr" = []{pinned}\n  }}\n}}'
        )
    return "\n\n".join(blocks) + "\n"


def role_params(role: RoleSpec, options: PkiOptions = PkiOptions()) -> dict:
    """The role's settings, in the form Vault reads them back (seconds, lists)."""
    return {
        "allowed_domains": list(role.allowed_names),
        "allow_bare_domains": True,
        "allow_subdomains": False,
        "allow_glob_domains": False,
        "allow_wildcard_certificates": False,
        "allow_any_name": False,
        "allow_localhost": False,
        "allow_ip_sans": False,
        "enforce_hostnames": role.enforce_hostnames,
        "server_flag": role.server,
        "client_flag": role.client,
        "organization": list(role.organization),
        "use_csr_common_name": True,
        "use_csr_sans": True,
        "require_cn": True,
        "ttl": parse_duration(role.max_ttl or options.leaf_ttl),
        "max_ttl": parse_duration(role.max_ttl or options.leaf_max_ttl),
        **LEAF_KEY,
        # Not needed by any galley certificate: pinned to "nothing", so a role loosened by
        # hand (another SAN type, a usage, a template) is converged back by the next bootstrap.
        "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"],
        "ext_key_usage": [],
        "ext_key_usage_oids": [],
        "allowed_uri_sans": [],
        "allowed_uri_sans_template": False,
        "allowed_other_sans": [],
        "allowed_serial_numbers": [],
        "allowed_domains_template": False,
        "allow_token_displayname": False,
        "code_signing_flag": False,
        "email_protection_flag": False,
        "basic_constraints_valid_for_non_ca": False,
        "ou": [],
        "no_store": False,
        "generate_lease": False,
    }


def bootstrap(
    client: hvac.Client, cluster: str, plan: Plan, options: PkiOptions = PkiOptions()
) -> list[str]:
    """Create or update the cluster's PKI mounts, root CAs, and ``plan``'s roles, shared
    values (KV) and policies (deleting its retired roles); the cert auth method and each of
    ``options.renewal_hosts``' own roles, renewal policy and login.

    Safe to re-run: returns one line per change made, and nothing when all was in place.
    """
    changes: list[str] = []
    with vault_errors("listing Vault's secrets engines failed"):
        mounted = client.sys.list_mounted_secrets_engines()
    mounted = mounted.get("data") or mounted
    for mount in MOUNTS:
        path = mount_path(cluster, mount.name)
        changes += _ensure_mount(client, path, mounted.get(f"{path}/"), options.ca_ttl)
        changes += _ensure_root_ca(
            client, path, mount.ca_common_name.format(cluster=cluster), options.ca_ttl
        )
    for role in plan.roles:
        changes += _ensure_role(
            client, mount_path(cluster, role.mount), role.name, role_params(role, options)
        )
    changes += kv.bootstrap(client, cluster, mounted, plan.secrets)
    changes += _ensure_cert_auth(client, cluster)
    # Hosts' roles before the policies granting them, the policies before retiring roles.
    changes += _ensure_renewal(client, cluster, options)
    for name, policy in plan.policies.items():
        changes += _ensure_policy(client, name, render_policy(name, policy))
    for role in plan.retired_roles:
        changes += _retire_role(client, mount_path(cluster, role.mount), role.name)
    return changes + _prune_renewal(client, cluster, options.renewal_hosts)


def host_role_params(cert: RenewalCert, options: PkiOptions) -> dict:
    """The role signing ``cert`` of its host (for the deploy and the host's renewal): the
    kind's usages and organization, but exactly the certificate's names, addresses and
    lifetime, the names taken from the request (which the policies pin), never the CSR."""
    return (
        role_params(cert.base_role, options)
        | role_names(cert.identity)
        | {
            "allow_ip_sans": bool(cert.identity.ip_addresses),
            "use_csr_common_name": False,
            "use_csr_sans": False,
            "ttl": parse_duration(cert.ttl or options.leaf_ttl),
        }
    )


def login_params(host: HostRenewal, host_ca: str) -> dict:
    """A host's cert-auth role: a certificate of the host identity CA naming exactly this host,
    presented from the host's own networks, logs in to a short-lived batch token carrying only
    the host's renewal policy, usable only from there."""
    return {
        "certificate": host_ca,
        "allowed_common_names": [host.identity.identity.cn],
        "token_bound_cidrs": list(host.sources),
        "display_name": host.host,
        "token_policies": [host.policy],
        "token_no_default_policy": True,
        "token_type": "batch",
        "token_ttl": RENEWAL_TOKEN_TTL,
        "token_max_ttl": RENEWAL_TOKEN_TTL,
    }


def _ensure_cert_auth(client: hvac.Client, cluster: str) -> list[str]:
    path = auth_path(cluster)
    with vault_errors("listing Vault's auth methods failed"):
        methods = client.sys.list_auth_methods()
    current = (methods.get("data") or methods).get(f"{path}/")
    if current is not None:
        if current.get("type") != "cert":
            raise VaultError(f"auth/{path} is a {current.get('type')!r} auth method, not cert")
        return []
    with vault_errors(f"enabling the cert auth method at auth/{path} failed"):
        client.sys.enable_auth_method(
            "cert", path=path, description="galley hosts renewing their certificates"
        )
    return [f"enabled cert auth method auth/{path}"]


def _ensure_renewal(client: hvac.Client, cluster: str, options: PkiOptions) -> list[str]:
    """Each host's own roles, renewal policy and login."""
    host_ca = read_ca(client, mount_path(cluster, "host"))
    changes: list[str] = []
    for host in options.renewal_hosts:
        for cert in host.certs:
            changes += _ensure_role(client, cert.mount, cert.role, host_role_params(cert, options))
        renewal = Policy(signs=host.policy_paths())
        changes += _ensure_policy(client, host.policy, render_policy(host.policy, renewal))
        changes += _ensure_login(client, cluster, host.host, login_params(host, host_ca))
    return changes


def _ensure_login(client: hvac.Client, cluster: str, name: str, wanted: dict) -> list[str]:
    path = login_path(cluster, name)
    with vault_errors(f"reading {path} failed"):
        current = (client.read(path) or {}).get("data")
    if current is not None:
        current["certificate"] = current.get("certificate", "").strip() + "\n"
    differing = [key for key, value in wanted.items() if current and current.get(key) != value]
    if current is not None and not differing:
        return []
    with vault_errors(f"writing {path} failed"):
        client.write_data(path, data=wanted)
    if current is None:
        return [f"created cert login {name} in auth/{auth_path(cluster)}"]
    return [f"updated cert login {name} in auth/{auth_path(cluster)} ({', '.join(differing)})"]


def _prune_renewal(client: hvac.Client, cluster: str, hosts: tuple[HostRenewal, ...]) -> list[str]:
    """Delete the renewal roles, policies and logins of hosts no longer in ``hosts``."""
    changes = []
    roles = {(cert.mount, cert.role) for host in hosts for cert in host.certs}
    for mount in MOUNTS:
        path = mount_path(cluster, mount.name)
        for name in _listed(client, f"{path}/roles"):
            if name.startswith("renew-") and (path, name) not in roles:
                with vault_errors(f"deleting role {name} of {path} failed"):
                    client.delete(f"{path}/roles/{name}")
                changes.append(f"deleted role {name} in {path}")
    logins = {host.host for host in hosts}
    for name in _listed(client, f"auth/{auth_path(cluster)}/certs"):
        if name not in logins:
            with vault_errors(f"deleting cert login {name} failed"):
                client.delete(login_path(cluster, name))
            changes.append(f"deleted cert login {name} in auth/{auth_path(cluster)}")
    kept = {host.policy for host in hosts}
    with vault_errors("listing policies failed"):
        names = client.sys.list_acl_policies()["data"]["keys"]
    for name in names:
        if name.startswith(f"{cluster}-renew-") and name not in kept:
            with vault_errors(f"deleting policy {name} failed"):
                client.sys.delete_acl_policy(name)
            changes.append(f"deleted policy {name}")
    return changes


def _retire_role(client: hvac.Client, path: str, name: str) -> list[str]:
    if name not in _listed(client, f"{path}/roles"):
        return []
    with vault_errors(f"deleting role {name} of {path} failed"):
        client.delete(f"{path}/roles/{name}")
    return [f"deleted role {name} in {path} (retired: each host signs with roles of its own)"]


def _listed(client: hvac.Client, path: str) -> list[str]:
    with vault_errors(f"listing {path} failed"):
        try:
            answer = client.list(path)
        except hvac.exceptions.InvalidPath:
            return []
    return list(((answer or {}).get("data") or {}).get("keys") or [])


def _ensure_mount(client: hvac.Client, path: str, current: dict | None, ca_ttl: str) -> list[str]:
    if current is None:
        with vault_errors(f"enabling the PKI mount {path} failed"):
            client.sys.enable_secrets_engine("pki", path=path, config={"max_lease_ttl": ca_ttl})
        return [f"enabled PKI mount {path}"]
    if current.get("type") != "pki":
        raise VaultError(f"{path} is mounted as {current.get('type')!r}, not as a PKI engine")
    if (current.get("config") or {}).get("max_lease_ttl") == parse_duration(ca_ttl):
        return []
    with vault_errors(f"tuning the PKI mount {path} failed"):
        client.sys.tune_mount_configuration(path, max_lease_ttl=ca_ttl)
    return [f"set max_lease_ttl of {path} to {ca_ttl}"]


def _ensure_root_ca(client: hvac.Client, path: str, common_name: str, ttl: str) -> list[str]:
    if read_ca(client, path, missing_ok=True):
        return []
    with vault_errors(f"generating the root CA of {path} failed"):
        answer = client.secrets.pki.generate_root(
            "internal", common_name, extra_params={"ttl": ttl, **CA_KEY}, mount_point=path
        )
    expires = datetime.fromtimestamp(answer["data"]["expiration"], UTC)
    return [f"generated root CA '{common_name}' in {path}, valid until {expires:%Y-%m-%d}"]


def _ensure_role(client: hvac.Client, path: str, name: str, wanted: dict) -> list[str]:
    with vault_errors(f"reading role {name} of {path} failed"):
        try:
            current = client.secrets.pki.read_role(name, mount_point=path)["data"]
        except hvac.exceptions.InvalidPath:
            current = None
    differing = [key for key, value in wanted.items() if current and current.get(key) != value]
    if current is not None and not differing:
        return []
    with vault_errors(f"writing role {name} of {path} failed"):
        client.secrets.pki.create_or_update_role(name, extra_params=wanted, mount_point=path)
    if current is None:
        return [f"created role {name} in {path}"]
    return [f"updated role {name} in {path} ({', '.join(differing)})"]


def _ensure_policy(client: hvac.Client, name: str, policy: str) -> list[str]:
    with vault_errors(f"reading policy {name} failed"):
        try:
            current = client.sys.read_acl_policy(name)["data"]["policy"]
        except hvac.exceptions.InvalidPath:
            current = None
    if current is not None and current.strip() == policy.strip():
        return []
    with vault_errors(f"writing policy {name} failed"):
        client.sys.create_or_update_acl_policy(name, policy)
    return [f"{'wrote' if current is None else 'updated'} policy {name}"]
