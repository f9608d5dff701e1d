"""Per-node overhead of `galley rollout kubelet` beyond the health wait, on the running lab.

`python bench/rollout.py` rolls the workers from the deployed kubelet to the mirror's upgrade
and back, and prints for each node the seconds from cordon to uncordon, the time spent waiting
for the kubelet's /healthz and for the Node to be Ready at the new version, and what is left:
the overhead (target < 10 s). Needs a deployed lab (e.g. after the integration tests); it
leaves the workers at the deployed version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from galley.inventory.load import load_inventory
from galley.lab.artifacts import KUBELET_UPGRADE_VERSION, KUBERNETES_VERSION
from galley.ops.admin import operator_dir
from galley.ops.rollout import JOURNAL

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = 10.0  # seconds of overhead per node


def roll(version: str, journal: Path) -> dict:
    """Run the rollout to ``version`` from a fresh journal; return the journal's nodes."""
    journal.unlink(missing_ok=True)
    command = [str(BIN / "galley"), "rollout", "kubelet", "--to", version, "inventories/lab.py"]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(journal.read_text())["nodes"]


def main() -> None:
    inventory = load_inventory(str(REPO / "inventories" / "lab.py"))
    journal = operator_dir(inventory.get_group("workers")[0].data) / JOURNAL
    print(f"{'rollout':<18} {'node':<14} {'total':>7} {'healthz':>8} {'Ready':>7} {'overhead':>9}")
    worst = 0.0
    for version in (KUBELET_UPGRADE_VERSION, KUBERNETES_VERSION):
        for name, record in sorted(roll(version, journal).items()):
            if record.get("state") != "done":
                continue
            waits = record.get("health_wait_seconds", 0.0), record.get("ready_wait_seconds", 0.0)
            overhead = record["seconds"] - sum(waits)
            worst = max(worst, overhead)
            print(
                f"{'to ' + version:<18} {name:<14} {record['seconds']:6.1f}s {waits[0]:7.1f}s "
                f"{waits[1]:6.1f}s {overhead:8.1f}s"
            )
    print(f"worst overhead {worst:.1f} s (target < {TARGET:.0f} s)")


if __name__ == "__main__":
    main()
