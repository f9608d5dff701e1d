"""`galley etcd remove` (galley.ops.etcd_remove): refusals before any change, then the whole
command against a real etcd 3.5.30 cluster of 5 on 127.0.0.1 (test_etcd_membership's local
hosts stand in for SSH): 5 -> 4 -> 3, a run killed right after ``member remove`` finished by
the next, a dead droplet, a second run that finds the work done, and the floor of 3 voters."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from galley.ops.batches import Connected
from galley.ops.etcd_remove import (
    EtcdRemoval,
    EtcdRemoveError,
    Target,
    _reach,
    etcdctl_client,
    run_removal,
)
from tests.unit.test_etcd_membership import (
    Killed,
    LocalHosts,
    Recorder,
    live_members,
    local_run,
    membership,
    snapshots,
)

# --- refusals before anything is reached -----------------------------------------------------


@dataclass
class Output:
    stdout: str = ""
    stderr: str = ""


@dataclass
class FakeHost:
    """A connected host whose every command fails (etcdctl missing, etcd down...)."""

    name: str

    def run_shell_command(self, command: str) -> tuple[bool, Output]:
        return False, Output(stderr=f"Error: {self.name}: dial tcp: connection refused")


TARGET = Target("e3", "e3", ("e1", "e2"), ())


def test_a_listed_host_that_cannot_be_reached_is_refused_unless_unreachable():
    connected = Connected({"e1": FakeHost("e1")}, {"e2": "timed out", "e3": "No route to host"})
    with pytest.raises(EtcdRemoveError, match=r"^cannot reach e3 \(No route to host\).*--unr"):
        _reach(connected, TARGET, unreachable=False)
    # --unreachable: e3 is not needed; e1 answers SSH but its etcdctl fails
    with pytest.raises(EtcdRemoveError, match="no other etcd member can read the member list"):
        _reach(connected, TARGET, unreachable=True)
    with pytest.raises(EtcdRemoveError, match=r"any other etcd member \(e2: timed out\)"):
        _reach(Connected({}, {"e2": "timed out"}), TARGET, unreachable=True)


def test_etcdctl_runs_on_the_first_other_member_that_reads_the_member_list():
    class Answering(FakeHost):
        def run_shell_command(self, command: str) -> tuple[bool, Output]:
            return True, Output(stdout='{"members": []}')

    runner, _ = etcdctl_client([FakeHost("e1"), Answering("e2")], [])
    assert runner.name == "e2"


def galley(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in its own process (loading an inventory patches the stdlib for gevent)."""
    command = [Path(sys.executable).parent / "galley", "etcd", "remove", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_the_command_refuses_before_reaching_vault_or_any_host(tmp_path):
    data = {"cluster_name": "lab", "galley_config_dir": str(tmp_path)}
    inventory = tmp_path / "inventory.py"
    hosts = [(f"e{i}", data | {"private_ip": f"127.0.9.{i}"}) for i in (1, 2, 3)]
    inventory.write_text(f"etcd = {hosts!r}\n")
    no_etcd = tmp_path / "workers.py"
    no_etcd.write_text(f"workers = {hosts!r}\n")
    for path, name, flags, said in (
        (inventory, "gone", [], "gone is not in the inventory's etcd group: galley reaches"),
        (no_etcd, "e1", [], "the inventory has no etcd group"),
        (inventory, "e3", [], "Vault address is not set"),  # the next check: nothing changed
        (inventory, "gone", ["--unreachable"], "Vault address is not set"),
    ):
        done = galley(str(path), name, "--yes", *flags)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"galley: etcd remove: {said}"), done.stderr
        assert done.stderr.endswith("(nothing was changed)\n")
    assert not (tmp_path / "lab").exists()


# --- the whole command against a real cluster -------------------------------------------------


@pytest.fixture(scope="module")
def five(etcd_release: Path, tmp_path_factory) -> Iterator[LocalHosts]:
    """A cluster of 5 members on 127.0.0.1."""
    root = tmp_path_factory.mktemp("etcd-remove")
    hosts = LocalHosts(etcd_release, root / "members")
    hosts.root.mkdir()
    hosts.bootstrap("m1", "m2", "m3", "m4", "m5")
    yield hosts
    hosts.close()


class Locks:
    """The cluster lock, counted."""

    def __init__(self) -> None:
        self.taken = 0

    def __call__(self) -> None:
        self.taken += 1


class KilledAfterRemove(Recorder):
    """galley dies right after etcd accepted ``member remove``, before the journal says so."""

    def __call__(self, command: str) -> tuple[bool, str, str]:
        ok, out, err = local_run(command)
        if ok and "member remove" in command:
            raise Killed
        return ok, out, err


class Wipes(LocalHosts):
    """Local hosts that count the host steps."""

    wiped: list[str]

    def stop_and_wipe(self, name: str) -> None:
        self.wiped.append(name)
        super().stop_and_wipe(name)


def removal(hosts: LocalHosts, name: str, run=None, **options) -> EtcdRemoval:
    others = [n for n in hosts.members if n != name and n in names(hosts)]
    return EtcdRemoval(
        name,
        hosts.wanted(*others),
        membership(hosts, run),
        listed=options.pop("listed", True),
        runner="m1",
        **options,
    )


def names(hosts: LocalHosts) -> list[str]:
    return sorted(m.name for m in live_members(hosts))


def journal(hosts: LocalHosts) -> dict:
    return json.loads((hosts.root.parent / "journal.json").read_text())


def test_removes_members_one_at_a_time_finishing_killed_runs_and_refusing_below_3(five, capsys):
    assert five.healthy("m1", "m2", "m3", "m4", "m5")
    hosts = Wipes(five.release, five.root, five.members, five.starts)
    hosts.wiped = []
    lines: list[str] = []
    lock = Locks()

    # 5 -> 4 needs --allow-even; without a terminal and without --yes nothing happens either
    assert run_removal(removal(hosts, "m5"), True, lock, lines.append) == 2
    assert "would leave 4 voters, an even count" in capsys.readouterr().err
    assert run_removal(removal(hosts, "m5", allow_even=True), False, lock, lines.append) == 2
    assert "not confirmed: pass --yes (nothing was changed)" in capsys.readouterr().err
    assert names(hosts) == ["m1", "m2", "m3", "m4", "m5"] and snapshots(hosts) == []
    assert lock.taken == 0

    # killed right after `member remove`: the next run finds no member and wipes its host
    killed = KilledAfterRemove()
    with pytest.raises(Killed):
        run_removal(removal(hosts, "m5", killed, allow_even=True), True, lock, lines.append)
    assert names(hosts) == ["m1", "m2", "m3", "m4"] and hosts.wiped == []
    assert journal(hosts)["nodes"]["m5"]["state"] == "removing"
    plan = capsys.readouterr().out
    assert "remove etcd member m5 [" in plan and "(5 voters -> 4)" in plan
    assert (
        "  on m5: stop and disable etcd, wipe /var/lib/etcd/member, delete its etcd keys and "
        "certificates"
    ) in plan
    recorder = Recorder()
    assert (
        run_removal(removal(hosts, "m5", recorder, allow_even=True), True, lock, lines.append) == 0
    )
    assert "an earlier run stopped before its host step" in capsys.readouterr().out
    assert recorder.changes() == [] and hosts.wiped == ["m5"]
    assert not hosts.running("m5") and not hosts.members["m5"].data_dir.exists()
    assert lines[-3:] == [
        "m5 removed from the etcd cluster: etcd stopped, its data dir wiped and its keys deleted "
        "on its host",
        "note: the etcd group will have 4 hosts, an even count: set etcd_allow_even_members = "
        "True until the next removal (or an addition) makes it odd",
        "next: drop m5 from the inventory's etcd group (the lab: `galley lab remove m5`; "
        "DigitalOcean: destroy the droplet or drop its role:etcd tag) before any deploy, which "
        "would add it back as a new member; then run the deploy (`pyinfra INVENTORY "
        "deploys/cluster.py`, or at least deploys/control_plane.py) so the apiservers' "
        "--etcd-servers drop it",
    ]
    assert journal(hosts)["status"] == "finished" and len(snapshots(hosts)) == 1

    # a dead droplet already gone from the inventory: 4 -> 3, no host step
    hosts.kill("m4")
    assert hosts.healthy("m1", "m2", "m3")
    gone = removal(hosts, "m4", recorder, listed=False, unreachable=True)
    assert run_removal(gone, True, lock, lines.append) == 0
    assert names(hosts) == ["m1", "m2", "m3"] and hosts.wiped == ["m5"]
    assert hosts.members["m4"].data_dir.exists()  # never wiped: unreachable
    assert lines[-2] == "m4 removed from the etcd cluster: its host skipped as unreachable"
    assert lines[-1].startswith("next: then run the deploy")
    assert "--unreachable: no host steps" in capsys.readouterr().out

    # a second run finds it done, takes no lock and changes nothing
    taken = lock.taken
    again = removal(hosts, "m4", recorder, listed=False, unreachable=True)
    assert run_removal(again, True, lock, lines.append) == 0
    assert lines[-2].startswith("m4 was already removed (member ")
    assert lock.taken == taken and len(snapshots(hosts)) == 2

    # an unknown name, and the floor of 3 voters
    assert run_removal(removal(hosts, "m9", listed=False), True, lock, lines.append) == 2
    assert "m9 is not a member of the etcd cluster and not in" in capsys.readouterr().err
    assert run_removal(removal(hosts, "m3"), True, lock, lines.append) == 2
    assert "would leave 2 voters; galley keeps at least 3" in capsys.readouterr().err
    assert names(hosts) == ["m1", "m2", "m3"] and hosts.running("m3")
    assert recorder.changes() == [f"remove {journal(hosts)['nodes']['m4']['member_id']}"]
