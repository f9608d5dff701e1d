"""Faults met on the lab read as one clear line, before anything changes: one stray byte in a
host's os-release, and a second day-2 command while another holds the cluster. (A droplet back
with a removed etcd member's data dir: `test_membership`.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from galley.lab.artifacts import KUBERNETES_UPGRADE_VERSION as B

from .conftest import REPO, run_cli, ssh, unit_starts

INVENTORY = "inventories/lab.py"
JOURNAL = Path("~/.config/galley/lab/rollout-kubelet.json").expanduser()


def test_a_stray_byte_in_os_release_costs_no_column_of_the_report(cluster):
    ssh(
        "lab-worker-2",
        "cp /etc/os-release /root/os-release && printf '# \\377\\n' >> /etc/os-release",
    )
    try:
        result = run_cli("galley", "report", INVENTORY, "--json", check=False)
    finally:
        ssh("lab-worker-2", "cp /root/os-release /etc/os-release")
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads(result.stdout)["hosts"]["lab-worker-2"]
    assert not facts.get("fact_errors") and facts["error"] is None
    assert facts["os"]["id"] == "debian"
    assert facts["units"]["kubelet"]["active"] == "active"
    assert facts["versions"]["kubelet"]["running"]


HOLDER = """
from gevent import monkey

monkey.patch_all()  # as galley's CLI does, before anything imports ssl

import sys, time
from galley.inventory.load import load_inventory
from galley.lock import ClusterLock, lease_seconds, lock_paths
from galley.journal import Journal, operator_dir
from galley.vault.client import VaultSettings, connect

data = next(iter(load_inventory("inventories/lab.py"))).data
client = connect(VaultSettings.from_data(data), lock_paths("lab"))
command = f"galley rollout kubelet --to {sys.argv[2]} {sys.argv[1]}"
ClusterLock.acquire(client, "lab", command, lease_seconds(data)).keep()
Journal.start(operator_dir(data) / "rollout-kubelet.json", sys.argv[2], resume=False).update()
print("holding", flush=True)
time.sleep(120)
"""


def test_a_second_rollout_names_the_live_one_and_never_calls_it_interrupted(cluster):
    """A rollout holds the cluster (its lock and journal, as `galley rollout kubelet` takes
    them): a second one started meanwhile is refused, naming the first."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, INVENTORY, B], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        starts = unit_starts()
        second = run_cli("galley", "rollout", "kubelet", "--to", B, INVENTORY, check=False)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("galley: rollout: cluster lab is locked by ")
        assert f"pid {holder.pid}, run " in line
        assert f" running `galley rollout kubelet --to {B} {INVENTORY}`" in line
        assert line.endswith("(nothing was changed)")
        assert "interrupted" not in line and "remove" not in line
        assert unit_starts() == starts
    finally:
        holder.kill()
        holder.wait()
    # Its holder is gone: now the journal is an interrupted rollout, resumable.
    third = run_cli("galley", "rollout", "kubelet", "--to", B, INVENTORY, check=False)
    assert third.returncode == 2 and f"an interrupted rollout to {B} is recorded" in third.stderr
    JOURNAL.unlink()  # nothing was rolled out: no rollout to resume
