"""The group data every cluster gets (group_data/all, etcd, control_plane, workers,
monitoring), merged:
for tests that build a pyinfra Inventory by hand."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUP_DATA = {
    key: value
    for group in ("all", "etcd", "control_plane", "workers", "monitoring")
    for key, value in runpy.run_path(str(REPO / "group_data" / f"{group}.py")).items()
    if not key.startswith("_")
}

# A small cluster by host name and private address: every group, two of each kind but one.
HOSTS = {
    "lab-etcd-1": "198.18.0.10",
    "lab-etcd-2": "198.18.0.11",
    "lab-cp-1": "198.18.0.13",
    "lab-mon-1": "198.18.0.17",
    "lab-worker-1": "198.18.0.21",
    "lab-worker-2": "198.18.0.22",
}
GROUPS = {"etcd": "-etcd-", "control_plane": "-cp-", "workers": "-worker-", "monitoring": "-mon-"}


def small_cluster(*hosts: str, addresses: dict[str, str] | None = None, **data):
    """A pyinfra Inventory of ``hosts`` (default: all of `HOSTS`) at their `HOSTS` address
    (or ``addresses``') with `GROUP_DATA` and ``data``, each in the group its name says."""
    from pyinfra.api import Inventory

    names = hosts or tuple(HOSTS)
    addresses = HOSTS | (addresses or {})
    return Inventory(
        (
            [(name, {"private_ip": addresses[name]}) for name in names],
            GROUP_DATA | {"cluster_name": "lab"} | data,
        ),
        **{group: ([name for name in names if word in name], {}) for group, word in GROUPS.items()},
    )
