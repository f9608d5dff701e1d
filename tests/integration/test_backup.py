"""etcd backups on the lab through the real CLIs: the members' snapshot timer (idempotent,
shown and flagged by the report), `galley etcd snapshot` copying a checked snapshot off a
follower, and `galley etcd restore` refusing a tampered file before anything stops, then
bringing the whole cluster back to a snapshot."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from galley.components.etcd import CLUSTER_IDENTITY
from galley.etcd import identity as cluster_identity
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.layout import CGROUP_SETUP_FAILED
from galley.ops.kubeapi import KubeApi
from galley.vault import kv
from tests.etcd_local import LocalHosts

from .conftest import (
    CRASH_ETCD,
    admin_files,
    changed,
    healthz,
    lab_vault,
    on_each,
    pyinfra_json,
    run_cli,
    run_deploy,
    ssh,
    ssh_run,
    wait_for,
)

INVENTORY = "inventories/lab.py"
SNAPSHOT_DIR = "/var/lib/etcd-snapshots"
NAME = re.compile(r"lab-etcd-r(\d+)-\d{8}T\d{6}Z\.db")
LOCAL = ["https://127.0.0.1:2379"]
JOB = "galley-etcd-snapshot.service"


def run_snapshot_job(name: str) -> None:
    """Start the member's snapshot job and wait for it; once more only when systemd could not
    set up its cgroup (exit 219/CGROUP: the lab's nspawn sandbox now and then, the job never
    ran), never when the job itself failed."""
    started = ssh_run(name, f"systemctl start {JOB}")
    if started.returncode != 0:
        status = ssh(name, f"systemctl show -p ExecMainStatus --value {JOB}", check=False)
        assert status.strip() == str(CGROUP_SETUP_FAILED), started.stderr
        ssh(name, f"systemctl start {JOB}")


def members(lab) -> list[str]:
    return [d.name for d in lab.droplets if "etcd" in d.roles]


def started(lab) -> dict[str, str]:
    """When etcd and kube-apiserver last started on each host that runs them."""
    return {
        d.name: ssh(d.name, "systemctl show -p ActiveEnterTimestamp etcd kube-apiserver")
        for d in lab.droplets
        if {"etcd", "control_plane"} & set(d.roles)
    }


def keys(prefix: str) -> list[str]:
    out = ssh("lab-etcd-1", etcdctl_command(LOCAL, "get", "--prefix", "--keys-only", prefix))
    return [line for line in out.splitlines() if line]


def report() -> subprocess.CompletedProcess:
    return run_cli("galley", "report", INVENTORY, "--json", check=False)


def test_the_timer_is_installed_and_a_second_run_changes_nothing(cluster):
    for name in members(cluster):
        assert ssh(name, "systemctl is-enabled galley-etcd-snapshot.timer").strip() == "enabled"
        assert ssh(name, "systemctl is-active galley-etcd-snapshot.timer").strip() == "active"
        assert ssh(name, f"stat -c '%a %U' {SNAPSHOT_DIR}").split() == ["700", "etcd"]
    dry = json.loads(run_cli("pyinfra", INVENTORY, "deploys/etcd.py", "--dry", "--json").stdout)
    assert [op["name"] for op in dry["plan"] if op["hosts_with_change"]] == []
    code, results, output = run_deploy("etcd")
    assert code == 0 and changed(results) == {}, output


def test_every_member_snapshots_itself_and_the_report_flags_a_stale_one(cluster):
    for name in members(cluster):
        run_snapshot_job(name)
        listing = ssh(name, f"stat -c '%a %U %n' {SNAPSHOT_DIR}/lab-etcd-r*.db").splitlines()
        assert listing and all(line.startswith("600 etcd ") for line in listing), listing
        newest = sorted(line.split()[-1] for line in listing)[-1]
        ssh(name, f"/usr/local/bin/etcdutl snapshot status {newest} -w json")
    result = report()
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = json.loads(result.stdout)["hosts"]
    for name in members(cluster):
        assert hosts[name]["snapshots"]["count"] >= 1
        assert NAME.fullmatch(hosts[name]["snapshots"]["newest"])

    ssh("lab-etcd-2", f"touch -d '3 hours ago' {SNAPSHOT_DIR}/lab-etcd-r*.db")
    try:
        result = report()
        assert result.returncode == 1
        problems = [p["message"] for p in json.loads(result.stdout)["problems"]]
        assert any(p.startswith("newest etcd snapshot is 3h00m old") for p in problems), problems
    finally:
        run_snapshot_job("lab-etcd-2")
    assert report().returncode == 0


def take_snapshot(directory: Path) -> tuple[Path, subprocess.CompletedProcess]:
    result = run_cli("galley", "etcd", "snapshot", INVENTORY, "--out", str(directory))
    (path,) = directory.glob("*.db")
    return path, result


def test_snapshot_copies_a_checked_snapshot_off_a_follower(cluster, tmp_path):
    leaders = {
        name
        for name, health in pyinfra_json("fact", "galley.facts.EtcdHealth", "--limit", "etcd")
        .popitem()[1]
        .items()
        if health["is_leader"]
    }
    path, result = take_snapshot(tmp_path)
    assert NAME.fullmatch(path.name), path.name
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert subprocess.run(["sha256sum", "-c", f"{path.name}.sha256"], cwd=tmp_path).returncode == 0
    source = re.search(r"saving from (\S+)", result.stdout).group(1)
    assert source not in leaders
    left = ssh(source, "ls /var/lib/galley/etcd-snapshots/").split()
    assert not [name for name in left if name.startswith("operator-")]  # the host's copy


def test_restore_refuses_a_bad_snapshot_or_no_confirmation_before_stopping_anything(
    cluster, tmp_path
):
    path, _ = take_snapshot(tmp_path)
    before = started(cluster)
    result = run_cli("galley", "etcd", "restore", INVENTORY, str(path), check=False)
    assert result.returncode == 2 and "not confirmed: pass --yes" in result.stderr

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run_cli("galley", "etcd", "restore", INVENTORY, str(path), "--yes", check=False)
    assert result.returncode == 2
    assert "does not match" in result.stderr and "nothing was changed" in result.stderr
    assert started(cluster) == before


def _another_clusters_snapshot(release: Path, directory: Path) -> Path:
    """A snapshot of a one-member etcd on 127.0.0.1 that galley marked as another cluster."""
    (directory / "other").mkdir()
    hosts = LocalHosts(release, directory / "other")
    try:
        hosts.bootstrap("other")
        assert hosts.healthy("other")
        (member,) = hosts.wanted("other")
        other = cluster_identity.marker("0123456789abcdef0123456789abcdef")
        client = hosts.client()
        client.put([member.client_url], cluster_identity.KEY, other)
        path = directory / "lab-etcd-r2-20261201T000000Z.db"
        client.snapshot(member.client_url, str(path))
    finally:
        hosts.close()
    return path


def test_restore_names_a_truncated_snapshot_and_another_clusters_before_stopping_anything(
    cluster, tmp_path, etcd_release
):
    path, _ = take_snapshot(tmp_path)
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    other = _another_clusters_snapshot(etcd_release, tmp_path)
    before, keys_before = started(cluster), keys("")
    result = run_cli("galley", "etcd", "restore", INVENTORY, str(truncated), "--yes", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"galley: etcd restore: {truncated} is not a whole etcd snapshot: it lacks the sha256 "
        "etcdctl appends when it saves one (truncated, or a copy of a data dir's db) (nothing "
        "was changed)"
    )
    identity = kv.read(lab_vault(cluster), "lab", CLUSTER_IDENTITY)["id"]
    result = run_cli("galley", "etcd", "restore", INVENTORY, str(other), "--yes", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"galley: etcd restore: {other}: the snapshot is of another cluster (identity "
        f"0123456789abcdef0123456789abcdef; this cluster's is {identity}): pass "
        "--other-cluster to restore it anyway (nothing was changed)"
    )
    assert started(cluster) == before and keys("") == keys_before


def test_restore_brings_the_cluster_back_to_the_snapshot(cluster, tmp_path):
    # 1000 keys, in transactions of 125 puts (etcd allows 128 operations in one).
    txn = etcdctl_command(LOCAL, "txn")
    puts = 'echo "put galley-backup/before/$((batch * 125 + i)) v"'
    ssh(
        "lab-etcd-1",
        f"for batch in $(seq 0 7); do {{ echo; for i in $(seq 125); do {puts}; done; echo; echo; }}"
        f" | {txn} >/dev/null; done",
    )
    path, _ = take_snapshot(tmp_path)
    ssh("lab-etcd-1", etcdctl_command(LOCAL, "put", "galley-backup/after", "2"))
    revision = int(NAME.fullmatch(path.name).group(1))
    on_each(members(cluster), f"{CRASH_ETCD} && rm -rf /var/lib/etcd/member")  # all data lost

    result = run_cli("galley", "etcd", "restore", INVENTORY, str(path), "--yes", timeout=900)
    for step in ("stop kube-apiserver on lab-cp-1", "restart kubelet on lab-worker-1"):
        assert step in result.stdout
    restored = keys("galley-backup/")
    assert len(restored) == 1000 and "galley-backup/after" not in restored
    health = pyinfra_json("fact", "galley.facts.EtcdHealth", "--limit", "etcd").popitem()[1]
    assert all(h["healthy"] for h in health.values()), health
    status = json.loads(
        ssh("lab-etcd-1", etcdctl_command(LOCAL, "endpoint", "status", "-w", "json"))
    )
    assert status[0]["Status"]["header"]["revision"] >= revision
    for name in members(cluster):
        assert ssh(name, "ls -d /var/lib/etcd.before-restore-*").strip()  # old data kept
        assert "ETCD_INITIAL_CLUSTER_STATE=existing" in ssh(name, "cat /etc/etcd/bootstrap.env")
    files = admin_files()
    apiservers = [d.address for d in cluster.droplets if "control_plane" in d.roles]
    assert wait_for(lambda: all(healthz(a, files) == (200, "ok") for a in apiservers), 90)
    api = KubeApi([f"https://{a}:6443" for a in apiservers], files)
    workers = {d.name for d in cluster.droplets if "workers" in d.roles}
    assert {node["metadata"]["name"] for node in api.nodes()} == workers

    journal = Path("~/.config/galley/lab/etcd-restore.json").expanduser()
    assert json.loads(journal.read_text())["status"] == "finished"
    code, results, output = run_deploy("cluster")  # the deploy does not fight the restore
    assert code == 0 and changed(results) == {}, output
