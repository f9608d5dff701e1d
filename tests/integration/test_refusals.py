"""Faults met on the lab read as one clear line, before anything changes: a droplet back with
the data dir of an etcd member removed while it was down, one stray byte in a host's
os-release, and a second day-2 command while another holds the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from galley.etcd.etcdctl import etcdctl_command
from galley.lab.artifacts import KUBERNETES_UPGRADE_VERSION as B

from .conftest import REPO, lab_inventory_variant, run_cli, run_deploy

INVENTORY = "inventories/lab.py"
LOCAL = ["https://127.0.0.1:2379"]
UNITS = "etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy flanneld"
JOURNAL = Path("~/.config/galley/lab/rollout-kubelet.json").expanduser()


def ssh(name: str, command: str, check: bool = True) -> str:
    return run_cli("galley", "lab", "ssh", name, command, check=check).stdout


def member_list() -> list[dict]:
    answer = ssh("lab-etcd-1", etcdctl_command(LOCAL, "member", "list", "-w", "json"))
    return sorted(json.loads(answer)["members"], key=lambda member: member["name"])


def unit_starts(lab) -> dict[str, str]:
    """When each galley unit on each running droplet last started (what a change restarts)."""
    return {
        d.name: ssh(d.name, f"systemctl show -p ActiveEnterTimestamp {UNITS}")
        for d in lab.droplets
        if not d.killed
    }


def test_a_droplet_back_with_a_removed_members_data_is_named_while_preparing(cluster, tmp_path):
    # Four etcd hosts for a while: the removal then leaves three.
    even = lab_inventory_variant(
        tmp_path,
        "etcd = [(name, {**data, 'etcd_allow_even_members': True}) for name, data in etcd]\n",
    )
    run_cli("galley", "lab", "add", "--role", "etcd", "--name", "lab-etcd-4")
    try:
        run_cli("galley", "hostkeys", "accept", INVENTORY, "lab-etcd-4")
        run_cli("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", INVENTORY)
        code, _, output = run_deploy("etcd", inventory=even)
        assert code == 0, output
        (removed,) = [m for m in member_list() if m["name"] == "lab-etcd-4"]
        run_cli("galley", "lab", "kill", "lab-etcd-4")
        run_cli("galley", "etcd", "remove", INVENTORY, "lab-etcd-4", "--unreachable", "--yes")
        run_cli("galley", "lab", "start", "lab-etcd-4")  # its disk kept: the member's data
        members, starts = member_list(), unit_starts(cluster)

        began = time.monotonic()
        code, _, output = run_deploy("etcd", inventory=even, check=False)
        assert code == 1 and time.monotonic() - began < 20  # no 60 s wait for health
        member_id = format(removed["ID"], "x")
        (line,) = [line for line in output.splitlines() if "lab-etcd-4: its etcd data dir" in line]
        assert line.endswith(
            f"lab-etcd-4: its etcd data dir /var/lib/etcd holds member {member_id}, which is no "
            "longer in the etcd cluster (removed, e.g. by `galley etcd remove --unreachable`); "
            "nothing was changed: wipe it on the host (`systemctl disable --now etcd && rm -rf "
            "/var/lib/etcd/member`) so the next deploy adds it as a new member, or replace the "
            "droplet"
        )
        assert "Traceback" not in output
        assert member_list() == members and unit_starts(cluster) == starts
    finally:
        run_cli("galley", "lab", "remove", "lab-etcd-4")
        run_cli("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", INVENTORY)


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
from galley.lock import ClusterLock, lock_paths
from galley.journal import Journal, operator_dir
from galley.vault.client import VaultSettings, connect

data = next(iter(load_inventory("inventories/lab.py"))).data
client = connect(VaultSettings.from_data(data), lock_paths("lab"))
command = f"galley rollout kubelet --to {sys.argv[2]} {sys.argv[1]}"
ClusterLock.acquire(client, "lab", command).keep()
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
        starts = unit_starts(cluster)
        second = run_cli("galley", "rollout", "kubelet", "--to", B, INVENTORY, check=False)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("galley: rollout: cluster lab is locked by ")
        assert f"pid {holder.pid} running `galley rollout kubelet --to {B} {INVENTORY}`" in line
        assert line.endswith("(nothing was changed)")
        assert "interrupted" not in line and "remove" not in line
        assert unit_starts(cluster) == starts
    finally:
        holder.kill()
        holder.wait()
    # Its holder is gone: now the journal is an interrupted rollout, resumable.
    third = run_cli("galley", "rollout", "kubelet", "--to", B, INVENTORY, check=False)
    assert third.returncode == 2 and f"an interrupted rollout to {B} is recorded" in third.stderr
    JOURNAL.unlink()  # nothing was rolled out: no rollout to resume
