"""`galley cloud-firewall INVENTORY [--dry]`: the host firewall's matrix as DigitalOcean Cloud
Firewalls, the layer in front of the droplets (NodePorts included).

One firewall per inventory group, ``galley-<cluster>-<group>``, attached to the group's
droplets by id (role tags such as ``role:etcd`` are shared by every cluster of an account, so
a firewall by tag would open one cluster's ports to another's droplets). Its inbound rules
are the union of the group's hosts' host-firewall rules (`galley.components.host_firewall`,
from the same declarations), ICMP from anywhere; outbound is open, as on the hosts. The
command lists the cluster's firewalls, then creates, updates (a whole firewall, as the API
replaces it) or deletes (a group left empty) only what differs, naming each change; ``--dry``
names them and writes nothing, and a second run makes no write at all.

Needs ``DIGITALOCEAN_TOKEN`` with firewall write access (``DIGITALOCEAN_API_URL`` replaces the
API's address).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import Inventory

from galley.components import opened_on
from galley.components.host_firewall import rules_of
from galley.components.model import CLUSTER_GROUPS
from galley.digitalocean import Api, DigitalOceanError, api_url

TOKEN_ENV = "DIGITALOCEAN_TOKEN"
EVERYWHERE = ["0.0.0.0/0", "::/0"]
# Outbound is the host firewall's too: everything (apt, Vault, the registries, DNS).
OUTBOUND = [
    {"protocol": "tcp", "ports": "all", "destinations": {"addresses": EVERYWHERE}},
    {"protocol": "udp", "ports": "all", "destinations": {"addresses": EVERYWHERE}},
    {"protocol": "icmp", "destinations": {"addresses": EVERYWHERE}},
]
PLACES = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


class CloudFirewallError(Exception):
    """The firewalls cannot be planned from the inventory (nothing was written)."""


def firewall_name(cluster: str, group: str) -> str:
    """The Cloud Firewall of ``group`` in ``cluster``."""
    return f"galley-{cluster}-{group.replace('_', '-')}"


def wanted_firewalls(inventory: Inventory) -> dict[str, dict[str, Any]]:
    """Each group's firewall, as the API's create and update bodies, by name."""
    bodies: dict[str, dict[str, Any]] = {}
    for group in CLUSTER_GROUPS:
        hosts = list(inventory.get_group(group, []))
        if not hosts:
            continue
        missing = [host.name for host in hosts if not host.data.get("droplet_id")]
        if missing:
            raise CloudFirewallError(
                f"{missing[0]}: no droplet_id: Cloud Firewalls attach droplets by id (an "
                "inventory from the DigitalOcean API or Terraform has them)"
            )
        sources: dict[tuple[str, int], set[str]] = {}
        for host in hosts:
            for rule in rules_of(host, opened_on(host)):
                sources.setdefault((rule.protocol, rule.port), set()).update(rule.sources)
        inbound = [
            {"protocol": protocol, "ports": str(port), "sources": {"addresses": sorted(found)}}
            for (protocol, port), found in sorted(sources.items())
        ]
        inbound.append({"protocol": "icmp", "sources": {"addresses": EVERYWHERE}})
        name = firewall_name(hosts[0].data.cluster_name, group)
        bodies[name] = {
            "name": name,
            "inbound_rules": inbound,
            "outbound_rules": OUTBOUND,
            "droplet_ids": sorted(int(host.data.droplet_id) for host in hosts),
            "tags": [],
        }
    return bodies


def _rules(rules: list[Mapping[str, Any]], where: str) -> dict[tuple[str, str], set[str]]:
    """Rules by (protocol, ports) -> their places as ``kind:value``; "all", "0" and ICMP's
    ports read as "all" (the API answers "0" for every port)."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        ports = str(rule.get("ports", "0"))
        key = (rule["protocol"], "all" if rule["protocol"] == "icmp" or ports == "0" else ports)
        places = rule.get(where) or {}
        found.setdefault(key, set()).update(
            f"{kind}:{value}" for kind in PLACES for value in places.get(kind) or []
        )
    return found


@dataclass
class Change:
    """One write: ``action`` create, update or delete of firewall ``name``, and what differs."""

    action: str
    name: str
    firewall_id: str | None = None
    body: dict[str, Any] | None = None
    details: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The change in one line."""
        what = f"{self.action} Cloud Firewall {self.name}"
        return f"{what}: {'; '.join(self.details)}" if self.details else what


def _differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """What an update changes, rule by rule, and the droplets."""
    details = []
    for label, key, where in (
        ("inbound", "inbound_rules", "sources"),
        ("outbound", "outbound_rules", "destinations"),
    ):
        old, new = _rules(have.get(key) or [], where), _rules(want.get(key) or [], where)
        for rule in sorted(old.keys() | new.keys()):
            before, after = old.get(rule, set()), new.get(rule, set())
            changes = [f"+{p}" for p in sorted(after - before)]
            changes += [f"-{p}" for p in sorted(before - after)]
            if changes:
                details.append(f"{label} {rule[0]} {rule[1]} {' '.join(changes)}")
    old_ids, new_ids = set(have.get("droplet_ids") or []), set(want.get("droplet_ids") or [])
    ids = [f"+{i}" for i in sorted(new_ids - old_ids)] + [
        f"-{i}" for i in sorted(old_ids - new_ids)
    ]
    if ids:
        details.append(f"droplets {' '.join(ids)}")
    if sorted(have.get("tags") or []) != sorted(want.get("tags") or []):
        details.append(f"tags {sorted(want.get('tags') or [])}")
    return details


def plan(
    existing: list[Mapping[str, Any]], wanted: Mapping[str, dict[str, Any]], cluster: str
) -> list[Change]:
    """The writes that make the account's firewalls of ``cluster`` the ``wanted`` ones:
    galley's own names only (``galley-<cluster>-<group>``), nothing else touched."""
    ours = {firewall_name(cluster, group) for group in CLUSTER_GROUPS}
    have = {f["name"]: f for f in existing if f.get("name") in ours}
    changes = []
    for name, body in wanted.items():
        if name not in have:
            rules = len(body["inbound_rules"])
            details = [f"{len(body['droplet_ids'])} droplets, {rules} inbound rules"]
            changes.append(Change("create", name, body=body, details=details))
        elif details := _differences(have[name], body):
            changes.append(Change("update", name, have[name]["id"], body, details))
    for name in sorted(have.keys() - wanted.keys()):
        changes.append(Change("delete", name, have[name]["id"], details=["its group is empty"]))
    return changes


def apply(api: Api, change: Change) -> None:
    """Make ``change`` through the API."""
    if change.action == "create":
        api.call("POST", api.url("/v2/firewalls"), body=change.body, ok=(202, 200))
    elif change.action == "update":
        url = api.url(f"/v2/firewalls/{change.firewall_id}")
        api.call("PUT", url, body=change.body, ok=(200,))
    else:
        api.call("DELETE", api.url(f"/v2/firewalls/{change.firewall_id}"), ok=(204,))


def cloud_firewall_cli(
    inventory: Inventory, dry: bool, environ: Mapping[str, str] = os.environ
) -> int:
    """`galley cloud-firewall`: 0 when the firewalls match (made so, or already), 1 when the
    inventory or the API refuses (one line; the writes before it are named)."""
    try:
        wanted = wanted_firewalls(inventory)
        if not wanted:
            raise CloudFirewallError("the inventory has no etcd, control_plane or workers hosts")
        cluster = next(iter(inventory)).data.cluster_name
        if not environ.get(TOKEN_ENV):
            raise CloudFirewallError(f"set {TOKEN_ENV} (a token with firewall write access)")
        api = Api(environ[TOKEN_ENV], api_url(environ))
        existing = api.pages("/v2/firewalls", "firewalls", {"per_page": 200})
        changes = plan(existing, wanted, cluster)
        for change in changes:
            print(("would " if dry else "") + change.describe())
            if not dry:
                apply(api, change)
    except (CloudFirewallError, DigitalOceanError) as exc:
        print(f"galley: cloud-firewall: {exc}", file=sys.stderr)
        return 1
    if not changes:
        print(f"Cloud Firewalls of {cluster}: as the inventory says, no change")
    elif dry:
        print(f"--dry: {len(changes)} change(s) not made")
    return 0
