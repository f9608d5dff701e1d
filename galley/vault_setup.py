"""`galley vault bootstrap`: a cluster's PKI mounts and root CAs, one Vault role per kind of
certificate the components declare (`galley.components.vault_roles`), the shared secrets in KV
and the ACL policies (`policies`). Idempotent: a re-run changes nothing and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hvac
import hvac.exceptions

import galley.components as registry
from galley import cluster_secrets
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.components.kubernetes import is_ip
from galley.components.model import Component
from galley.lock import lock_paths
from galley.ops.admin import operator_paths
from galley.ops.revocation import revocation_paths
from galley.pki import (
    ADMIN_ROLE,
    CA_KEY,
    LEAF_KEY,
    MOUNTS,
    RoleSpec,
    mount_path,
    parse_duration,
    read_ca,
)
from galley.vault import VaultError, vault_errors

# Every role the bootstrap writes: those the components' certificates declare, and the admin's.
ROLES: tuple[RoleSpec, ...] = (*registry.vault_roles(), ADMIN_ROLE)


@dataclass(frozen=True)
class PkiOptions:
    """Tunables of the bootstrap; ``allowed_names`` overrides a role's names by role name.

    A role's names may hold ``{cluster}``, ``{cluster_domain}`` and ``{api_endpoint}`` (a
    name in front of the apiservers; a name that needs an unset one is left out).
    """

    leaf_ttl: str = "720h"
    leaf_max_ttl: str = "720h"
    ca_ttl: str = "87600h"
    allowed_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cluster_domain: str = "cluster.local"
    api_endpoint: str | None = None


# One policy per job: the phases whose hosts a token of that job deploys.
JOBS: Mapping[str, tuple[str, ...]] = {
    "etcd": ("etcd",),
    "control-plane": ("control plane",),
    "workers": ("flannel", "workers"),
}


def options_from(inventory) -> PkiOptions:
    """Bootstrap options from an inventory's data: its cluster domain and, when the API
    endpoint is a name, that name (the apiserver role then allows exactly it)."""
    hosts = list(inventory)
    data = hosts[0].data if hosts else {}
    endpoint = data.get("api_endpoint")
    name = str(endpoint) if endpoint and not is_ip(str(endpoint)) else None
    return PkiOptions(
        cluster_domain=data.get("cluster_domain") or "cluster.local", api_endpoint=name
    )


def deploy_paths(cluster: str, components: Iterable[Component] | None = None) -> dict[str, str]:
    """Each API path deploying ``components`` (default: all) uses, with the capability it
    needs (for the policies and `galley.vault.connect`): their roles' sign paths, the mounts'
    CAs, and for the apiservers the shared secrets in KV."""
    components = list(registry.REGISTRY if components is None else components)
    paths = {
        f"{mount_path(cluster, r.mount)}/sign/{r.name}": "update"
        for r in registry.vault_roles(components)
    }
    for mount in MOUNTS:
        paths[f"{mount_path(cluster, mount.name)}/ca/pem"] = "read"
        paths[f"{mount_path(cluster, mount.name)}/cert/ca"] = "read"
    if KUBE_APISERVER in components:
        for path in cluster_secrets.api_paths(cluster):
            paths[path] = "read"
    return paths | lock_paths(cluster)


def policies(cluster: str) -> dict[str, dict[str, str]]:
    """Every ACL policy the bootstrap writes, name -> {path: capability}: one per job
    (``<cluster>-etcd``, ``-control-plane``, ``-workers``), ``<cluster>-deploy`` combining
    them for one-token convenience, and ``<cluster>-operator`` (the admin credential, which no
    deploy policy grants, and revoking a leaving host's certificates: `galley node remove`).
    Token lookup and capabilities-self come with Vault's ``default``."""
    jobs = {
        f"{cluster}-{job}": deploy_paths(
            cluster, [c for name in phases for c in registry.phase(name).components]
        )
        for job, phases in JOBS.items()
    }
    combined = {path: cap for paths in jobs.values() for path, cap in paths.items()}
    operator = operator_paths(cluster) | revocation_paths(cluster) | lock_paths(cluster)
    return {**jobs, f"{cluster}-deploy": combined, f"{cluster}-operator": operator}


def repr_hcl(text: str) -> str:
    """A string literal in HCL."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_policy(name: str, paths: Mapping[str, str]) -> str:
    """The HCL of policy ``name`` granting exactly ``paths``."""
    blocks = [f"# galley policy {name}: written by `galley vault bootstrap`"]
    for path, capabilities in paths.items():
        listed = ", ".join(repr_hcl(capability) for capability in capabilities.split(","))
        blocks.append(f'path "{path}" {{\n  capabilities = [{listed}]\n}}')
    return "\n\n".join(blocks) + "\n"


def role_params(role: RoleSpec, cluster: str, options: PkiOptions = PkiOptions()) -> dict:
    """The role's settings, in the form Vault reads them back (seconds, lists)."""
    names = options.allowed_names.get(role.name, role.allowed_names)
    values = {
        "cluster": cluster,
        "cluster_domain": options.cluster_domain,
        "api_endpoint": options.api_endpoint or "",
    }
    return {
        "allowed_domains": [
            name.format(**values)
            for name in names
            if "{api_endpoint}" not in name or options.api_endpoint
        ],
        "allow_bare_domains": True,
        "allow_subdomains": False,
        "allow_glob_domains": role.glob_names,
        "allow_wildcard_certificates": False,
        "allow_any_name": False,
        "allow_localhost": role.localhost,
        "allow_ip_sans": role.ip_sans,
        "enforce_hostnames": role.enforce_hostnames,
        "server_flag": role.server,
        "client_flag": role.client,
        "organization": list(role.organization),
        "use_csr_common_name": True,
        "use_csr_sans": True,
        "require_cn": True,
        "ttl": parse_duration(options.leaf_ttl),
        "max_ttl": parse_duration(options.leaf_max_ttl),
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


def bootstrap(client: hvac.Client, cluster: str, options: PkiOptions = PkiOptions()) -> list[str]:
    """Create or update the cluster's PKI mounts, root CAs, roles, shared secrets (KV) and
    deploy policy.

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
    for role in ROLES:
        changes += _ensure_role(client, role, cluster, options)
    changes += cluster_secrets.bootstrap(client, cluster, mounted)
    for name, paths in policies(cluster).items():
        changes += _ensure_policy(client, name, render_policy(name, paths))
    return changes


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


def _ensure_role(
    client: hvac.Client, role: RoleSpec, cluster: str, options: PkiOptions
) -> list[str]:
    path = mount_path(cluster, role.mount)
    wanted = role_params(role, cluster, options)
    with vault_errors(f"reading role {role.name} of {path} failed"):
        try:
            current = client.secrets.pki.read_role(role.name, mount_point=path)["data"]
        except hvac.exceptions.InvalidPath:
            current = None
    differing = [key for key, value in wanted.items() if current and current.get(key) != value]
    if current is not None and not differing:
        return []
    with vault_errors(f"writing role {role.name} of {path} failed"):
        client.secrets.pki.create_or_update_role(role.name, extra_params=wanted, mount_point=path)
    if current is None:
        return [f"created role {role.name} in {path}"]
    return [f"updated role {role.name} in {path} ({', '.join(differing)})"]


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
