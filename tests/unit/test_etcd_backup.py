"""etcd backups: snapshot names, checks and retention, the report's flags, the restore plan;
then on real etcd 3.5.30 clusters on 127.0.0.1: the members' snapshot script, and a snapshot
copied off, more writes, and a restore (killed halfway and finished) that brings exactly the
snapshot's keys back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pyinfra.api import Inventory
from pyinfra.api.util import get_template

from galley.components.etcd import ETCD, SNAPSHOT_SAVE_TIMEOUT, snapshot_variables
from galley.components.model import TEMPLATES
from galley.etcd import identity as cluster_identity
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.layout import SNAPSHOT_JOB
from galley.etcd.plan import Live, Member, Wanted
from galley.etcd.snapshot import (
    SnapshotError,
    SnapshotStatus,
    read_snapshot_file,
    sidecar,
    snapshot_name,
)
from galley.facts.etcd import EtcdSnapshots
from galley.inventory.validate import inventory_problems, problems
from galley.ops.etcd_restore import (
    Layout,
    Restore,
    RestoreError,
    Step,
    batches,
    check_snapshot,
    identity_problem,
    new_journal,
    restore_command,
    restore_plan,
)
from galley.ops.etcd_snapshot import Snapshotter
from galley.report import analyse, snapshot_problem
from tests.etcd_local import LocalHosts, local_run

NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
IDENTITY = "5f0c7e2a9b1d4c3e8a6f2b1c0d9e8f7a"


def _member(member_id: str, name: str) -> Member:
    return Member(member_id, name, (f"http://{name}:2380",), (f"http://{name}:2379",))


def test_snapshot_names_carry_cluster_revision_and_utc_time():
    assert snapshot_name("lab", 12345, NOW) == "lab-etcd-r12345-20261130T180000Z.db"
    local = NOW.astimezone(ZoneInfo("America/New_York"))
    assert snapshot_name("lab", 1, local) == "lab-etcd-r1-20261130T180000Z.db"


def test_a_snapshot_status_without_hash_or_size_is_no_snapshot():
    good = {"hash": 7, "revision": 9, "totalKey": 3, "totalSize": 4096}
    assert SnapshotStatus.from_json(good) == SnapshotStatus(7, 9, 3, 4096)
    for bad in ({**good, "hash": 0}, {**good, "totalSize": 0}, {"revision": 1}, None):
        with pytest.raises(SnapshotError):
            SnapshotStatus.from_json(bad)


def test_the_snapshot_source_is_a_healthy_follower_else_the_leader():
    a, b, c = _member("a", "a"), _member("b", "b"), _member("c", "c")
    live = Live((a, b, c), {"a": None, "b": "down", "c": None}, frozenset({"a"}))
    assert live.snapshot_source() == c
    assert live.snapshot_source(leaving=c) == a  # only the leader is left
    assert Live((a,), {"a": "down"}).snapshot_source() is None


def test_the_restore_plan_stops_the_apiservers_first_and_restarts_the_rest_last():
    steps = restore_plan(
        ["e1", "e2"],
        ["cp1"],
        "kube-apiserver",
        {"cp1": ["kube-controller-manager", "kube-scheduler"], "w1": ["kubelet"]},
    )
    assert [step.key for step in steps] == [
        "stop kube-apiserver on cp1",
        "stop etcd on e1",
        "stop etcd on e2",
        "copy on e1",
        "copy on e2",
        "restore on e1",
        "restore on e2",
        "start etcd on e1",
        "start etcd on e2",
        "check",
        "identity",
        "start kube-apiserver on cp1",
        "restart kube-controller-manager on cp1",
        "restart kube-scheduler on cp1",
        "restart kubelet on w1",
        "settle",
    ]
    assert Step("check").describe().startswith("wait until every member is healthy")
    # Each unit stops on all its hosts at once; everything else one step at a time.
    runs = [[step.key for step in batch] for batch in batches(steps)]
    assert runs[:2] == [["stop kube-apiserver on cp1"], ["stop etcd on e1", "stop etcd on e2"]]
    assert all(len(batch) == 1 for batch in runs[2:])


@pytest.mark.parametrize(
    ("snapshots", "expected"),
    [
        ({"timer": "active", "newest_time": NOW - timedelta(minutes=90)}, None),
        (
            {"timer": "active", "newest_time": NOW - timedelta(hours=2, minutes=1)},
            "newest etcd snapshot is 2h01m old (every 3600s)",
        ),
        ({"timer": "active", "timer_since": NOW - timedelta(minutes=3)}, None),  # not due yet
        (
            {"timer": "active", "timer_since": NOW - timedelta(minutes=7)},
            "no etcd snapshot since the timer started at 2026-11-30 17:53:00",
        ),
        (
            {"timer": "inactive", "newest_time": NOW - timedelta(minutes=5)},
            "the snapshot timer is inactive",
        ),
    ],
)
def test_the_report_flags_old_or_missing_snapshots(snapshots, expected):
    assert snapshot_problem(snapshots, 3600, NOW) == expected


def test_the_report_shows_each_members_newest_snapshot_and_fails_on_a_stale_one():
    fresh = {"timer": "active", "count": 24, "newest": "lab-etcd-r9-x.db", "newest_size": 2048}
    hosts = {
        "lab-etcd-1": {
            "groups": ["etcd"],
            "error": None,
            "snapshots": fresh | {"newest_time": NOW - timedelta(minutes=10)},
            "snapshot_interval": 3600,
        },
        "lab-etcd-2": {
            "groups": ["etcd"],
            "error": None,
            "snapshots": fresh | {"newest_time": NOW - timedelta(days=3)},
            "snapshot_interval": 3600,
        },
    }
    report = analyse(hosts, 7, NOW)
    (table,) = [t for t in report.tables if t.title == "etcd snapshots"]
    assert table.rows[0] == (
        "lab-etcd-1",
        "24",
        "lab-etcd-r9-x.db",
        "0h10m",
        "2 KiB",
        "active",
        "-",
    )
    assert table.flagged == {1}
    assert [str(p) for p in report.problems] == [
        "lab-etcd-2: etcd snapshots: newest etcd snapshot is 3d old (every 3600s)"
    ]


def _inventory(**data) -> Inventory:
    return Inventory(
        (
            [("lab-etcd-1", {"private_ip": "198.18.0.10"})],
            {"cluster_name": "lab", "etcd_client_port": 2379} | data,
        ),
        etcd=(["lab-etcd-1"], {}),
    )


def test_bad_snapshot_settings_are_refused_before_any_change():
    bad = _inventory(etcd_snapshot_interval="hourly", etcd_snapshot_keep=0, etcd_snapshot_dir="x")
    fields = {p.field for p in problems(bad, [ETCD]) if p.field.startswith("etcd_snapshot")}
    assert fields == {"etcd_snapshot_interval", "etcd_snapshot_keep", "etcd_snapshot_dir"}
    assert not [p for p in inventory_problems(_inventory()) if "snapshot" in p.field]


def test_the_timer_takes_its_schedule_from_group_data():
    host = _inventory(etcd_snapshot_interval="6h").get_host("lab-etcd-1")
    timer = get_template(str(TEMPLATES / ETCD.timers[0].timer)).render(snapshot_variables(host))
    assert "OnUnitActiveSec=6h\n" in timer and "OnActiveSec=60s\n" in timer
    service = get_template(str(TEMPLATES / ETCD.timers[0].service)).render(snapshot_variables(host))
    assert "User=etcd\n" in service and f"ExecStart=/usr/local/sbin/{SNAPSHOT_JOB}\n" in service
    # Only after a good snapshot, as root: its time for the node exporter.
    assert f"ExecStartPost=+/usr/local/sbin/{SNAPSHOT_JOB} --record-success\n" in service


def put(endpoint: str, key: str, value: str) -> int:
    """Put one key through etcd's JSON gateway; the revision it made."""
    body = {
        "key": base64.b64encode(key.encode()).decode(),
        "value": base64.b64encode(value.encode()).decode(),
    }
    request = urllib.request.Request(
        f"{endpoint}/v3/kv/put", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(json.load(response)["header"]["revision"])


def get(endpoint: str, key: str) -> str | None:
    """The value of one key (a linearizable read), None when there is none."""
    body = {"key": base64.b64encode(key.encode()).decode()}
    request = urllib.request.Request(
        f"{endpoint}/v3/kv/range", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.load(response).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def count(endpoint: str, prefix: str) -> int:
    """How many keys start with ``prefix`` (a linearizable read)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {
        "key": base64.b64encode(prefix.encode()).decode(),
        "range_end": base64.b64encode(end.encode()).decode(),
        "count_only": True,
    }
    request = urllib.request.Request(
        f"{endpoint}/v3/kv/range", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(json.load(response).get("count", 0))


@dataclass
class BackupHosts(LocalHosts):
    """`RestoreHosts` over local etcd processes: files are copied, other units recorded."""

    units: list[str] = field(default_factory=list)  # "stop kube-apiserver on cp1", ...
    fail_start: str | None = None  # start_member raises once for this member
    # The apiservers' stops wait for each other: stopped one at a time, they time out.
    apiservers_stop: threading.Barrier = field(
        default_factory=lambda: threading.Barrier(2, timeout=10)
    )

    def run(self, name: str, command: str) -> tuple[bool, str, str]:
        return local_run(command)

    def get(self, name: str, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def put(self, name: str, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(local, remote)
        os.chmod(remote, 0o600)

    def systemctl(self, name: str, action: str, unit: str) -> None:
        if unit == "etcd" and action == "stop":
            self.stop(name)
        if unit == "kube-apiserver" and action == "stop":
            self.apiservers_stop.wait()
        self.units.append(f"{action} {unit} on {name}")

    def running_for(self, name: str, unit: str) -> float | None:
        return 60.0  # the recorded units "run" steadily

    def start_member(self, name: str, initial_cluster: str) -> None:
        if name == self.fail_start:
            self.fail_start = None
            raise RestoreError(f"{name}: killed")
        super().start_member(name, initial_cluster)


@pytest.fixture
def cluster(etcd_release: Path, tmp_path) -> Iterator[BackupHosts]:
    hosts = BackupHosts(etcd_release, tmp_path / "members")
    hosts.root.mkdir()
    hosts.bootstrap("m1", "m2", "m3")
    assert hosts.healthy("m1", "m2", "m3")
    yield hosts
    hosts.close()


def _script(hosts: BackupHosts, directory: Path, client_port: int, keep: int, timeout: str) -> Path:
    """The members' snapshot script for a local member: plain http, the release's tools."""
    host = _inventory(
        etcd_snapshot_dir=str(directory), etcd_snapshot_keep=keep, etcd_client_port=client_port
    ).get_host("lab-etcd-1")
    variables = snapshot_variables(host)
    etcdctl = etcdctl_command(
        [f"http://127.0.0.1:{client_port}"],
        etcdctl=str(hosts.release / "etcdctl"),
        cacert="",
        cert="",
        key="",
        command_timeout=timeout,
    )
    variables["shell"] |= {
        "etcdctl": etcdctl,
        "etcdutl": f"{hosts.release}/etcdutl",
        "metrics": str(directory.parent / "snapshot.prom"),
    }
    script = directory.parent / "galley-etcd-snapshot"
    text = get_template(str(TEMPLATES / ETCD.timers[0].script.template)).render(
        cluster_name="lab", **variables
    )
    script.write_text(text)
    return script


def test_the_members_script_saves_checks_and_keeps_the_newest(cluster, tmp_path):
    m1 = cluster.members["m1"]
    directory = tmp_path / "snapshots"
    directory.mkdir(mode=0o700)
    old = ["lab-etcd-r1-20200101T000000Z.db", "lab-etcd-r2-20200102T000000Z.db"]
    foreign = ["notes.txt", "other-etcd-r1-20200101T000000Z.db"]
    for name in old + foreign:
        (directory / name).write_text("x")
    script = _script(cluster, directory, m1.client_port, 3, SNAPSHOT_SAVE_TIMEOUT)
    for index in range(3):
        put(m1.wanted.client_url, f"script/{index}", "v")
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "saved " in done.stdout
    kept = sorted(p.name for p in directory.iterdir())
    assert set(foreign) < set(kept) and not set(old) & set(kept)
    saved = [directory / name for name in kept if name not in foreign]
    assert len(saved) == 3
    for path in saved:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        status = subprocess.run(
            [str(cluster.release / "etcdutl"), "snapshot", "status", str(path), "-w", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        revision = json.loads(status.stdout)["revision"]
        assert path.name.startswith(f"lab-etcd-r{revision}-")

    fact = EtcdSnapshots()
    output = local_run(fact.command(str(directory), "lab-etcd", SNAPSHOT_JOB))[1]
    found = fact.process(output.splitlines())
    newest = max(saved, key=lambda p: p.stat().st_mtime)
    assert found["count"] == 3 and found["newest"] == newest.name
    assert found["newest_size"] == newest.stat().st_size

    # After a good snapshot the service records its time for the node exporter.
    recorded = subprocess.run(["bash", str(script), "--record-success"], check=True)
    assert recorded.returncode == 0
    metrics = (tmp_path / "snapshot.prom").read_text().splitlines()
    assert "galley_etcd_snapshot_interval_seconds 3600" in metrics
    (last,) = [m for m in metrics if m.startswith("galley_etcd_snapshot_last_success_")]
    assert abs(int(last.split()[1]) - time.time()) < 60
    assert oct((tmp_path / "snapshot.prom").stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in directory.iterdir()) == kept  # and saved nothing

    dead = _script(cluster, directory, 1, 3, "3s")  # nothing listens on port 1
    done = subprocess.run(["bash", str(dead)], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("galley-etcd-snapshot: snapshot save failed")
    assert sorted(p.name for p in directory.iterdir()) == kept  # nothing left, nothing lost


def test_snapshot_then_restore_brings_back_exactly_the_snapshots_keys(cluster, tmp_path):
    members = cluster.wanted("m1", "m2", "m3")
    endpoint = members[0].client_url
    put(endpoint, cluster_identity.KEY, cluster_identity.marker(IDENTITY))
    for index in range(1000):
        put(endpoint, f"before/{index:04d}", "v")

    client = cluster.client()
    snapshotter = Snapshotter(
        cluster, lambda name: client, members, "lab", work_dir=str(tmp_path / "host-work")
    )
    path, status = snapshotter.take(tmp_path / "operator")
    assert path.name.startswith(f"lab-etcd-r{status.revision}-")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert list((tmp_path / "host-work").iterdir()) == []  # the host's copy is gone
    check = subprocess.run(["sha256sum", "-c", sidecar(path).name], cwd=path.parent)
    assert check.returncode == 0
    assert status.total_keys >= 1000

    for index in range(200):
        put(endpoint, f"after/{index:04d}", "v")
    old_ids = {m.name: m.id for m in client.members([endpoint])}

    etcdutl = str(cluster.release / "etcdutl")
    found, checked = check_snapshot(path, lambda digest: pytest.fail("not here"), etcdutl)
    assert checked == status and found.intact and found.identities == {IDENTITY}
    assert identity_problem(found, IDENTITY) is None
    digest = found.sha256
    restarts = {"cp1": ["kube-controller-manager", "kube-scheduler"], "w1": ["kubelet"]}
    steps = restore_plan(["m1", "m2", "m3"], ["cp1", "cp2"], "kube-apiserver", restarts)
    journal_path = tmp_path / "etcd-restore.json"

    def restore() -> Restore:
        return Restore(
            cluster,
            client,
            members,
            steps,
            path,
            digest,
            status,
            new_journal(journal_path, digest, "lab"),
            Layout(
                data_dir=lambda name: str(cluster.members[name].data_dir),
                work_dir=str(tmp_path / "restore-work"),
                etcdutl=etcdutl,
                owner=None,
            ),
            IDENTITY,
            timeout=60,
        )

    cluster.fail_start = "m2"  # the run dies after m1 started
    first = restore()
    with pytest.raises(RestoreError, match="m2: killed"):
        first.run()
    assert json.loads(journal_path.read_text())["status"] == "running"
    second = restore()
    assert second.token == first.token
    second.run()

    assert cluster.healthy("m1", "m2", "m3")
    assert count(endpoint, "before/") == 1000
    assert count(endpoint, "after/") == 0
    new_ids = {m.name: m.id for m in client.members([endpoint])}
    assert set(new_ids) == set(old_ids) and not set(new_ids.values()) & set(old_ids.values())
    for member in cluster.members.values():
        aside = Path(f"{member.data_dir}.before-restore-{first.token}")
        assert (aside / "member").is_dir()  # the old data is kept
    assert set(cluster.units[:2]) == {"stop kube-apiserver on cp1", "stop kube-apiserver on cp2"}
    assert cluster.units[-5:] == [
        "start kube-apiserver on cp1",
        "start kube-apiserver on cp2",
        "restart kube-controller-manager on cp1",
        "restart kube-scheduler on cp1",
        "restart kubelet on w1",
    ]
    assert json.loads(journal_path.read_text())["status"] == "finished"
    assert put(endpoint, "after-restore", "v") > status.revision
    assert get(endpoint, cluster_identity.KEY) == cluster_identity.marker(IDENTITY)


def test_a_snapshot_that_does_not_match_its_checksum_is_refused(tmp_path):
    path = tmp_path / "lab-etcd-r1-20261130T180000Z.db"
    path.write_bytes(b"not a snapshot")
    sidecar(path).write_text(f"{'0' * 64}  {path.name}\n")
    with pytest.raises(RestoreError, match="does not match"):
        check_snapshot(path, lambda digest: pytest.fail("no further check"), None)


def _saved_like_etcdctl(path: Path, content: bytes) -> Path:
    """``content`` padded to 512-byte pages with its sha256 appended, as etcdctl saves."""
    content += b"\0" * (-len(content) % 512)
    path.write_bytes(content + hashlib.sha256(content).digest())
    return path


def test_truncated_corrupt_and_unreadable_snapshots_are_named_as_such(cluster, tmp_path):
    members = cluster.wanted("m1", "m2", "m3")
    put(members[0].client_url, cluster_identity.KEY, cluster_identity.marker(IDENTITY))
    for index in range(300):
        put(members[0].client_url, f"key/{index:04d}", "x" * 200)
    client = cluster.client()
    snapshotter = Snapshotter(
        cluster, lambda name: client, members, "lab", work_dir=str(tmp_path / "host-work")
    )
    good, _ = snapshotter.take(tmp_path / "operator")
    etcdutl = str(cluster.release / "etcdutl")
    never = lambda digest: pytest.fail("checked here")  # noqa: E731
    data = good.read_bytes()

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(RestoreError) as refused:
        check_snapshot(truncated, never, etcdutl)
    assert str(refused.value) == (
        f"{truncated} is not a whole etcd snapshot: it lacks the sha256 etcdctl appends when it "
        "saves one (truncated, or a copy of a data dir's db)"
    )

    corrupt = tmp_path / "corrupt.db"  # a value's bytes changed: etcdutl status reads it
    middle = data.index(b"x" * 200) + 50
    corrupt.write_bytes(data[:middle] + b"y" * 24 + data[middle + 24 :])
    assert (
        subprocess.run([etcdutl, "snapshot", "status", str(corrupt)], check=False).returncode == 0
    )
    with pytest.raises(RestoreError, match=r"corrupt\.db is corrupt: its content does not match"):
        check_snapshot(corrupt, never, etcdutl)

    # Whole and intact, but not a database: etcdutl's own error, one line.
    garbage = _saved_like_etcdctl(tmp_path / "garbage.db", b"not a bbolt file")
    with pytest.raises(RestoreError) as refused:
        check_snapshot(garbage, never, etcdutl)
    assert str(refused.value) == (
        f"{garbage} is not a readable etcd snapshot (corrupt or truncated): etcdutl: "
        "invalid database"
    )
    # A bbolt file cut at a page boundary crashes etcdutl (a panic, or a fault reading past the
    # mapped file): the crash's line, not the stack.
    cut = _saved_like_etcdctl(tmp_path / "cut.db", data[: (len(data) // 3) // 4096 * 4096])
    with pytest.raises(RestoreError) as refused:
        check_snapshot(cut, never, etcdutl)
    assert re.search(
        r"is not a readable etcd snapshot \(corrupt or truncated\): etcdutl: "
        r"(panic: |unexpected fault address )",
        str(refused.value),
    )
    assert "\n" not in str(refused.value) and "goroutine" not in str(refused.value)


def test_a_snapshot_of_another_cluster_or_none_is_told_apart(tmp_path):
    other = "0123456789abcdef0123456789abcdef"
    ours = _saved_like_etcdctl(
        tmp_path / "ours.db", b"...galley-cluster-identity:" + IDENTITY.encode() + b"..."
    )
    theirs = _saved_like_etcdctl(
        tmp_path / "theirs.db", b"...galley-cluster-identity:" + other.encode() + b"..."
    )
    none = _saved_like_etcdctl(tmp_path / "none.db", b"just keys")
    assert identity_problem(read_snapshot_file(ours), IDENTITY) is None
    assert identity_problem(read_snapshot_file(theirs), IDENTITY) == (
        f"the snapshot is of another cluster (identity {other}; this cluster's is {IDENTITY})"
    )
    assert "carries no galley cluster identity" in identity_problem(
        read_snapshot_file(none), IDENTITY
    )
    # A marker split across two read chunks is still found.
    big = b"x" * ((1 << 20) - 10) + b"galley-cluster-identity:" + IDENTITY.encode()
    split = _saved_like_etcdctl(tmp_path / "split.db", big)
    assert read_snapshot_file(split).identities == {IDENTITY}


def test_the_restore_script_keeps_the_old_data_and_a_rerun_changes_nothing(tmp_path):
    data = tmp_path / "etcd"
    (data / "member").mkdir(parents=True)
    fake_etcdutl = tmp_path / "etcdutl"
    fake_etcdutl.write_text(  # makes the --data-dir it is given, with a member dir
        '#!/bin/sh\nfor a; do case $a in --data-dir=*) mkdir -p "${a#*=}/member";; esac; done\n'
    )
    fake_etcdutl.chmod(0o755)
    snapshot = tmp_path / "copy.db"
    snapshot.write_text("x")
    command = restore_command(
        str(snapshot),
        Wanted("m1", "http://127.0.0.1:2380", "http://127.0.0.1:2379"),
        "m1=http://127.0.0.1:2380",
        "lab-etcd-restore-x",
        str(data),
        str(fake_etcdutl),
        None,
    )
    assert local_run(command)[0]
    (data / "restored").write_text("mine")
    assert local_run(command)[0]  # done: the restored dir is not moved aside again
    assert (data / "restored").exists()
    assert (tmp_path / "etcd.before-restore-lab-etcd-restore-x" / "member").is_dir()
    assert oct(data.stat().st_mode & 0o777) == "0o700"
