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
