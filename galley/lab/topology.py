"""Pure planning of the lab: which droplets exist, their names, roles and addresses."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

BRIDGE = "br-galley"
NETWORK = ipaddress.IPv4Network("198.18.0.0/24")
GATEWAY = ipaddress.IPv4Address("198.18.0.1")
FIRST_DROPLET = ipaddress.IPv4Address("198.18.0.10")
CLUSTER = "lab"

# Inventory group for each role, and the short word used in droplet names.
ROLES = {"etcd": "etcd", "control_plane": "cp", "workers": "worker", "monitoring": "mon"}
MAX_PER_ROLE = 50


class TopologyError(ValueError):
    """The requested lab shape is impossible."""


@dataclass(frozen=True)
class DropletPlan:
    """One droplet the lab will boot."""

    name: str
    address: str
    roles: tuple[str, ...] = field(default_factory=tuple)


def plan_droplets(
    etcd: int = 3,
    control_plane: int = 2,
    workers: int = 2,
    stacked_etcd: bool = False,
    monitoring: int = 1,
) -> list[DropletPlan]:
    """Name and address every droplet of a lab.

    Droplets are numbered per role (``lab-etcd-1``, ``lab-cp-1``, ``lab-worker-1``,
    ``lab-mon-1``) and get
    consecutive addresses from 198.18.0.10. With ``stacked_etcd`` the first ``etcd``
    control-plane droplets also carry the etcd role and no separate etcd droplets are booted.
    """
    counts = {
        "etcd": etcd,
        "control_plane": control_plane,
        "workers": workers,
        "monitoring": monitoring,
    }
    for role, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TopologyError(
                f"--{role.replace('_', '-')} must be a whole number >= 0, got {count!r}"
            )
        if count > MAX_PER_ROLE:
            raise TopologyError(
                f"--{role.replace('_', '-')} {count} exceeds the lab's limit of {MAX_PER_ROLE}"
            )
    if stacked_etcd and etcd > control_plane:
        raise TopologyError(
            f"--stacked-etcd puts etcd on control-plane droplets: {etcd} etcd members need "
            f"at least {etcd} control-plane droplets, got {control_plane}"
        )
    if sum(counts.values()) == 0:
        raise TopologyError("the lab needs at least one droplet")

    roles_by_name: dict[str, list[str]] = {}
    for role, word in ROLES.items():
        if stacked_etcd and role == "etcd":
            continue
        for index in range(1, counts[role] + 1):
            roles_by_name[f"{CLUSTER}-{word}-{index}"] = [role]
    if stacked_etcd:
        for index in range(1, etcd + 1):
            roles_by_name[f"{CLUSTER}-cp-{index}"].append("etcd")

    # 4 roles x MAX_PER_ROLE droplets from .10 stay inside the /24.
    return [
        DropletPlan(name=name, address=str(FIRST_DROPLET + offset), roles=tuple(sorted(roles)))
        for offset, (name, roles) in enumerate(roles_by_name.items())
    ]


def plan_added(existing: dict[str, str], group: str, name: str | None = None) -> DropletPlan:
    """One more droplet in ``group`` for a lab whose droplets are ``existing`` (name ->
    address): the next free number of its role unless ``name`` is given, the lowest free
    address from 198.18.0.10."""
    if group not in ROLES:
        known = ", ".join(sorted(ROLES))
        raise TopologyError(f"unknown role {group!r}; known: {known}")
    if name is None:
        index = 1
        while f"{CLUSTER}-{ROLES[group]}-{index}" in existing:
            index += 1
        name = f"{CLUSTER}-{ROLES[group]}-{index}"
    if name in existing:
        raise TopologyError(f"a droplet called {name} already exists")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        raise TopologyError(f"{name!r} is not a valid droplet name (lower-case letters, digits, -)")
    taken = set(existing.values())
    for address in NETWORK.hosts():
        if address >= FIRST_DROPLET and str(address) not in taken:
            return DropletPlan(name=name, address=str(address), roles=(group,))
    raise TopologyError(f"no free address left in {NETWORK}")
