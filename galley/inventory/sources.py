"""Turn droplets (from the DigitalOcean API or Terraform) into pyinfra inventory groups.

An inventory file calls `digitalocean_groups` or `terraform_groups` and assigns the groups it
needs to module-level names. Settings come from the environment:

- DIGITALOCEAN_TOKEN (API only; a read-only token is enough), DIGITALOCEAN_API_URL (optional)
- GALLEY_CLUSTER_TAG: the tag every cluster droplet carries (overrides the file's default)
- GALLEY_TERRAFORM_OUTPUT: a Terraform directory or saved `terraform output -json` file
- GALLEY_CONNECT_VIA: "private" (default) or "public": the address pyinfra connects to
- GALLEY_SSH_USER, GALLEY_SSH_KEY, GALLEY_SSH_KNOWN_HOSTS, GALLEY_SSH_STRICT_HOST_KEY_CHECKING:
  pyinfra's ssh_* settings; unset ones are left to group_data.
- GALLEY_KNOWN_HOSTS: the directory of host keys pinned per droplet id (galley.inventory.hostkeys;
  default ~/.config/galley/known_hosts/<cluster tag>). Setting GALLEY_SSH_KNOWN_HOSTS instead
  opts out of pinning: host keys are then the operator's business.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pyinfra import context
from pyinfra.api.exceptions import InventoryError as PyinfraInventoryError

from galley.digitalocean import DigitalOceanError, Droplet, api_url, list_droplets
from galley.inventory import hostkeys
from galley.inventory.terraform import TerraformError, load_droplets
from galley.text import clean

DEFAULT_ROLE_TAGS: Mapping[str, str] = {
    "etcd": "role:etcd",
    "control_plane": "role:control-plane",
    "workers": "role:worker",
    "monitoring": "role:monitoring",
}
SSH_ENV = {
    "ssh_user": "GALLEY_SSH_USER",
    "ssh_key": "GALLEY_SSH_KEY",
    "ssh_known_hosts_file": "GALLEY_SSH_KNOWN_HOSTS",
    "ssh_strict_host_key_checking": "GALLEY_SSH_STRICT_HOST_KEY_CHECKING",
}
CONNECT_VIA = ("private", "public")

HostEntry = tuple[str, dict[str, Any]]


class InventoryError(PyinfraInventoryError):
    """The inventory cannot be built (pyinfra's CLI prints these without a traceback)."""


def groups_from_droplets(
    droplets: Iterable[Droplet],
    cluster_tag: str | None,
    role_tags: Mapping[str, str] = DEFAULT_ROLE_TAGS,
    connect_via: str = "private",
    extra_data: Mapping[str, Any] | None = None,
) -> dict[str, list[HostEntry]]:
    """Group droplets carrying `cluster_tag` (None: all) by role tag, as pyinfra host entries.

    Only active droplets are used; the others, and droplets without a role tag, are listed
    on stderr. Every group in `role_tags` is in the result, possibly empty.
    """
    if connect_via not in CONNECT_VIA:
        raise InventoryError(
            f"connect_via must be one of {', '.join(CONNECT_VIA)}: {connect_via!r}"
        )
    tagged = [d for d in droplets if cluster_tag is None or cluster_tag in d.tags]
    active = sorted((d for d in tagged if d.status == "active"), key=lambda d: d.name)
    inactive = [f"{d.name} ({d.status})" for d in tagged if d.status != "active"]
    _warn("droplets that are not active", inactive)
    roles = set(role_tags.values())
    members = [d for d in active if roles & set(d.tags)]
    _warn(
        f"droplets without a role tag ({', '.join(role_tags.values())})",
        [d.name for d in active if not roles & set(d.tags)],
    )
    _check_unique_names(members)
    groups: dict[str, list[HostEntry]] = {group: [] for group in role_tags}
    for droplet in members:
        entry = (droplet.name, _host_data(droplet, connect_via, extra_data or {}))
        for group, tag in role_tags.items():
            if tag in droplet.tags:
                groups[group].append(entry)
    return groups


def ssh_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """pyinfra ssh_* host data from the GALLEY_SSH_* variables that are set."""
    return {key: environ[name] for key, name in SSH_ENV.items() if environ.get(name)}


def digitalocean_groups(
    default_tag: str, environ: Mapping[str, str] = os.environ
) -> dict[str, list[HostEntry]]:
    """Groups of the droplets tagged GALLEY_CLUSTER_TAG (else `default_tag`), via the API."""
    token = environ.get("DIGITALOCEAN_TOKEN")
    if not token:
        raise InventoryError(
            "DIGITALOCEAN_TOKEN is not set: export a DigitalOcean API token (read access is enough)"
        )
    tag = environ.get("GALLEY_CLUSTER_TAG") or default_tag
    try:
        droplets = list(_tagged(token, tag, api_url(environ)))
    except DigitalOceanError as exc:
        raise InventoryError(str(exc)) from exc
    return _groups(droplets, tag, environ)


@cache
def _tagged(token: str, tag: str, base_url: str) -> tuple[Droplet, ...]:
    """The droplets tagged ``tag``, listed once per process (the inventory is loaded twice:
    once to be validated before any host is contacted, once by pyinfra)."""
    return tuple(list_droplets(token, tag, base_url=base_url))


def terraform_groups(
    default_source: str | Path,
    default_tag: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, list[HostEntry]]:
    """Groups of the droplets in Terraform's `droplets` output (see galley.inventory.terraform).

    The source is GALLEY_TERRAFORM_OUTPUT, else `default_source`; droplets are filtered by
    GALLEY_CLUSTER_TAG, else `default_tag` (None: no filter).
    """
    source = environ.get("GALLEY_TERRAFORM_OUTPUT") or default_source
    tag = environ.get("GALLEY_CLUSTER_TAG") or default_tag
    try:
        droplets = load_droplets(source)
    except TerraformError as exc:
        raise InventoryError(str(exc)) from exc
    return _groups(droplets, tag, environ)


def _groups(
    droplets: list[Droplet], tag: str | None, environ: Mapping[str, str]
) -> dict[str, list[HostEntry]]:
    settings = ssh_settings(environ)
    groups = groups_from_droplets(
        droplets,
        tag,
        connect_via=environ.get("GALLEY_CONNECT_VIA") or "private",
        extra_data=settings,
    )
    if "ssh_known_hosts_file" not in settings:
        entries = [entry for group in groups.values() for entry in group]
        hostkeys.pin(
            entries,
            hostkeys.store_dir(tag or "default", environ),
            _inventory_file(),
            hostkeys.guarded(groups),
        )
    return groups


def _inventory_file() -> str:
    """The inventory file pyinfra is loading (relative to the cwd when inside it), for messages."""
    filename = context.state.current_exec_filename if context.ctx_state.isset() else None
    if not filename:
        return "INVENTORY"
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative


def _host_data(droplet: Droplet, connect_via: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    address = droplet.private_ip if connect_via == "private" else droplet.public_ip
    if not address:
        raise InventoryError(
            f"droplet {droplet.name} (id {droplet.id}) has no {connect_via} IPv4 address"
        )
    data = {
        "private_ip": droplet.private_ip,
        "public_ip": droplet.public_ip,
        "droplet_id": droplet.id,
        "region": droplet.region,
        "size": droplet.size,
        "ssh_hostname": address,
    }
    return {key: value for key, value in data.items() if value is not None} | dict(extra)


def _check_unique_names(droplets: list[Droplet]) -> None:
    ids: dict[str, list[int]] = {}
    for droplet in droplets:
        ids.setdefault(droplet.name, []).append(droplet.id)
    duplicates = [f"{name} (ids {', '.join(map(str, i))})" for name, i in ids.items() if len(i) > 1]
    if duplicates:
        raise InventoryError(
            "droplet names must be unique (pyinfra would merge the hosts): " + "; ".join(duplicates)
        )


def _warn(what: str, names: list[str]) -> None:
    if names:
        print(f"galley: ignoring {what}: {clean(', '.join(names))}", file=sys.stderr)
