"""Per-host overhead of a rollout beyond its health waits, on the running lab.

`python bench/rollout.py kubelet` rolls the workers from the deployed version to the mirror's
upgrade and back and prints, per node, the seconds from cordon to uncordon, the time spent
waiting for the kubelet's /healthz and for the Node to be Ready at the new version, and what is
left: the overhead. `python bench/rollout.py control-plane` does the same for every apiserver,
controller manager and scheduler (install, switch, restart, health wait, version check); its
first step's snapshot is shown apart. Target: < 10 s of overhead per host. Needs a deployed lab
(e.g. after the integration tests); it leaves the hosts at the deployed version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from galley.inventory.load import load_inventory
from galley.lab.artifacts import KUBERNETES_UPGRADE_VERSION, KUBERNETES_VERSION
from galley.ops import control_plane, rollout
from galley.ops.admin import operator_dir

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = 10.0  # seconds of overhead per host
JOURNALS = {"kubelet": rollout.JOURNAL, "control-plane": control_plane.JOURNAL}


def roll(kind: str, version: str, journal: Path) -> tuple[dict, float]:
    """Run the rollout to ``version`` from a fresh journal: the journal's records, the wall."""
    journal.unlink(missing_ok=True)
    command = [str(BIN / "galley"), "rollout", kind, "--to", version, "inventories/lab.py"]
    if version == KUBERNETES_VERSION and kind == "control-plane":
        command.append("--allow-downgrade")
    start = time.monotonic()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(journal.read_text())["nodes"], time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(JOURNALS))
    kind = parser.parse_args().kind
    inventory = load_inventory(str(REPO / "inventories" / "lab.py"))
    journal = operator_dir(next(iter(inventory)).data) / JOURNALS[kind]
    print(f"{'rollout':<12} {'host':<36} {'total':>7} {'healthz':>8} {'Ready':>7} {'overhead':>9}")
    worst = 0.0
    for version in (KUBERNETES_UPGRADE_VERSION, KUBERNETES_VERSION):
        records, wall = roll(kind, version, journal)
        hosts = 0.0
        for name, record in sorted(records.items()):
            if record.get("state") != "done":
                continue
            waits = record.get("health_wait_seconds", 0.0), record.get("ready_wait_seconds", 0.0)
            overhead = record["seconds"] - sum(waits)
            worst, hosts = max(worst, overhead), hosts + record["seconds"]
            print(
                f"{'to ' + version:<12} {name:<36} {record['seconds']:6.1f}s {waits[0]:7.1f}s "
                f"{waits[1]:6.1f}s {overhead:8.1f}s"
            )
        print(
            f"{'to ' + version:<12} {'whole command (refusals, snapshot, lock)':<36} {wall:6.1f}s"
            f"   of which outside the hosts' steps {wall - hosts:.1f}s"
        )
    print(f"worst overhead per host {worst:.1f} s (target < {TARGET:.0f} s)")


if __name__ == "__main__":
    main()
