"""`galley rollout control-plane` on the lab: the real CLI against real kube-apiserver,
kube-controller-manager and kube-scheduler on both control-plane droplets.

Version A is the deployed control plane, B the mirror's upgrade, and the mirror's never-ready
build stands for a bad release. The refusals and the bad release start from the whole control
plane at A, the upgrade takes it to B, and an interrupted rollout back to A, resumed, ends the
module where it began (each test rolls the control plane where it needs it only when it is
elsewhere). While a command runs, a poller asks every apiserver's ``/readyz`` every 100 ms: at
least one must answer at every moment.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from galley.lab.artifacts import (
    KUBERNETES_BROKEN_VERSION,
    KUBERNETES_UPGRADE_VERSION,
    KUBERNETES_VERSION,
)
from galley.ops.control_plane import JOURNAL
from galley.ops.kubeapi import KubeApi, kubelet_version

from .conftest import (
    CRASH_ETCD,
    admin_files,
    hosts_of,
    kill_once_journal_says_done,
    run_cli,
    ssh,
    wait_for,
)

INVENTORY = "inventories/lab.py"
A, B, BROKEN = KUBERNETES_VERSION, KUBERNETES_UPGRADE_VERSION, KUBERNETES_BROKEN_VERSION
RELEASES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
JOURNAL_PATH = admin_files().directory / JOURNAL


def rollout(*args: str) -> subprocess.CompletedProcess:
    return run_cli("galley", "rollout", "control-plane", *args, INVENTORY, check=False)


@pytest.fixture(scope="module")
def control_plane(cluster) -> list[str]:
    """The control-plane droplets in inventory order; the module leaves them at A."""
    yield hosts_of(cluster, "control_plane")
    JOURNAL_PATH.unlink(missing_ok=True)
    rollout("--to", A, "--allow-downgrade", "--ready-timeout", "60")
    JOURNAL_PATH.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def apiservers(cluster, control_plane) -> dict[str, KubeApi]:
    """Each control-plane droplet's own apiserver (one client each: no failover)."""
    address = {d.name: d.address for d in cluster.droplets}
    return {
        name: KubeApi(f"https://{address[name]}:6443", admin_files(), timeout=2)
        for name in control_plane
    }


class ReadyzPoller:
    """Asks every apiserver's /readyz every 100 ms while a command runs: the moments none
    answered ok, which apiservers were ever not ready, and the most not ready at once."""

    def __init__(self, apiservers: dict[str, KubeApi]) -> None:
        self.apiservers = apiservers
        self.rounds = 0
        self.none_ready: list[dict[str, str]] = []
        self.unready: set[str] = set()
        self.most_unready = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            answers = {name: api.readyz() for name, api in self.apiservers.items()}
            down = {name: why for name, (ok, why) in answers.items() if not ok}
            self.rounds += 1
            self.unready |= set(down)
            self.most_unready = max(self.most_unready, len(down))
            if len(down) == len(answers):
                self.none_ready.append(down)
            time.sleep(0.1)

    def __enter__(self) -> ReadyzPoller:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def versions(apiservers: dict[str, KubeApi]) -> dict[str, str]:
    return {name: api.version() for name, api in apiservers.items()}


def current(name: str, release: str) -> str:
    return ssh(name, f"readlink /opt/galley/{release}/current").strip()


def snapshot(apiservers: dict[str, KubeApi], control_plane: list[str]) -> dict:
    """What a refused or dry run must leave alone: links, installed versions, unit starts."""
    listing = "; ".join(
        f"readlink /opt/galley/{release}/current; ls /opt/galley/{release}" for release in RELEASES
    )
    units = "systemctl show -p ActiveEnterTimestamp -p MainPID " + " ".join(RELEASES)
    hosts = {name: ssh(name, f"{listing}; {units}") for name in control_plane}
    return {"hosts": hosts, "versions": versions(apiservers)}


def wait_ready(apiservers: dict[str, KubeApi]) -> None:
    assert wait_for(lambda: all(api.readyz()[0] for api in apiservers.values()), 60)


def all_at(version: str, apiservers: dict[str, KubeApi], control_plane: list[str]) -> bool:
    """Whether every apiserver answers at ``version`` and every release's link points at it."""
    links = "; ".join(f"readlink /opt/galley/{release}/current" for release in RELEASES)
    return set(versions(apiservers).values()) == {f"v{version}"} and all(
        ssh(name, links).split() == [version] * len(RELEASES) for name in control_plane
    )


def roll_to(version: str, apiservers: dict[str, KubeApi], control_plane: list[str]) -> None:
    """The whole control plane at ``version``, every apiserver ready, no journal: rolled
    there only when a test left it elsewhere."""
    JOURNAL_PATH.unlink(missing_ok=True)
    if not all_at(version, apiservers, control_plane):
        result = rollout("--to", version, "--allow-downgrade", "--ready-timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
        JOURNAL_PATH.unlink(missing_ok=True)
        assert all_at(version, apiservers, control_plane)
    wait_ready(apiservers)


@pytest.fixture
def at_a(apiservers, control_plane):
    roll_to(A, apiservers, control_plane)


def test_dry_run_prints_the_plan_in_order_and_changes_nothing(at_a, apiservers, control_plane):
    before = snapshot(apiservers, control_plane)
    result = rollout("--to", B, "--dry-run")
    assert result.returncode == 0, result.stderr
    expected = [
        f"{number}. {name} {release} v{A} -> v{B}"
        for number, (release, name) in enumerate(
            ((release, name) for release in RELEASES for name in control_plane), 1
        )
    ]
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert [line for line in lines if line[:1].isdigit()] == expected
    assert snapshot(apiservers, control_plane) == before
    assert not JOURNAL_PATH.exists()


def test_a_never_ready_apiserver_build_is_rolled_back_and_the_run_stops(
    at_a, apiservers, control_plane
):
    first, rest = control_plane[0], control_plane[1:]
    with ReadyzPoller(apiservers) as seen:
        result = rollout("--to", BROKEN, "--ready-timeout", "8")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"kube-apiserver on {first} did not come back" in result.stdout
    assert f"{first}: kube-apiserver rolled back to {A}" in result.stdout
    assert seen.none_ready == [] and seen.unready == {first}
    assert versions(apiservers)[first] == f"v{A}" and apiservers[first].readyz()[0]
    assert current(first, "kube-apiserver") == A
    for name in control_plane:
        for release in RELEASES[1:]:
            assert current(name, release) == A
            assert BROKEN not in ssh(name, f"ls /opt/galley/{release}")
    for name in rest:
        assert current(name, "kube-apiserver") == A
        assert BROKEN not in ssh(name, "ls /opt/galley/kube-apiserver")
    journal = json.loads(JOURNAL_PATH.read_text())
    assert journal["status"] == "failed"
    assert journal["nodes"][f"kube-apiserver@{first}"]["state"] == "rolled-back"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--to", "1.33.99"), "no sha256 for kube_apiserver 1.33.99"),
        (("--to", "1.35.0"), "skips a minor version"),
        (("--to", "1.33.3"), "a downgrade needs --allow-downgrade"),
        (
            ("--to", "1.32.0", "--allow-downgrade"),
            "would be newer than the apiserver at the target",
        ),
    ],
)
def test_bad_targets_are_refused_before_anything(at_a, apiservers, control_plane, args, message):
    # A controller manager or scheduler that lost its lease in an earlier test restarts by
    # itself: start once every unit runs.
    running = " ".join(RELEASES)
    assert wait_for(
        lambda: all(
            ssh(name, f"systemctl is-active {running}", check=False).split()
            == ["active"] * len(RELEASES)
            for name in control_plane
        ),
        60,
    )
    before = snapshot(apiservers, control_plane)
    result = rollout(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "nothing was changed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(apiservers, control_plane) == before
    assert not JOURNAL_PATH.exists()


def test_a_kubelet_skew_refusal_names_the_node(at_a, apiservers, cluster):
    worker = hosts_of(cluster, "workers")[0]
    kubelet = kubelet_version(next(iter(apiservers.values())).node(worker))
    result = rollout("--to", "1.32.0", "--allow-downgrade")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{worker}'s kubelet {kubelet} would be newer" in result.stderr


def test_the_kubelet_rollout_refuses_a_kubelet_newer_than_the_apiservers(
    at_a, apiservers, control_plane
):
    result = run_cli("galley", "rollout", "kubelet", "--to", "1.34.0", INVENTORY, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "kubelet 1.34.0 would be newer than the apiserver" in result.stderr
    assert "nothing was changed" in result.stderr


def test_an_unhealthy_etcd_member_is_refused_before_anything(
    at_a,
    apiservers,
    control_plane,
    cluster,
):
    member = hosts_of(cluster, "etcd")[-1]
    before = snapshot(apiservers, control_plane)
    ssh(member, CRASH_ETCD)
    try:
        # The apiservers' own etcd check fails now and then for a while after a member's
        # crash: the refusal to prove is the one of an unhealthy member beside apiservers
        # healthy at every look for 3 s.
        healthy: list[float] = []

        def steadily_healthy() -> bool:
            if all(api.healthz()[0] for api in apiservers.values()):
                healthy.append(time.monotonic())
                return healthy[-1] - healthy[0] >= 3
            healthy.clear()
            return False

        assert wait_for(steadily_healthy, 45, 0.5)
        result = rollout("--to", B)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"etcd member {member}" in result.stderr
        assert "nothing was changed" in result.stderr
    finally:
        ssh(member, "systemctl start etcd")
    assert wait_for(lambda: rollout("--to", B, "--dry-run").returncode == 0, 60)
    assert snapshot(apiservers, control_plane) == before


def test_an_apiserver_already_not_ready_is_refused_before_anything(at_a, apiservers, control_plane):
    last = control_plane[-1]
    ssh(last, "systemctl stop kube-apiserver")
    try:
        result = rollout("--to", B)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"apiserver {last}" in result.stderr and "nothing was changed" in result.stderr
    finally:
        ssh(last, "systemctl start kube-apiserver")
    wait_ready(apiservers)
    for name in control_plane:
        assert current(name, "kube-apiserver") == A
    assert not JOURNAL_PATH.exists()


def test_upgrade_one_host_at_a_time_while_an_apiserver_always_answers(
    at_a, apiservers, control_plane
):
    with ReadyzPoller(apiservers) as seen:
        result = rollout("--to", B, "--ready-timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert seen.rounds > 10 and seen.none_ready == []
    assert seen.most_unready <= 1
    starts = [
        result.stdout.index(f"{name}: install, switch and restart {release} v{B}")
        for release in RELEASES
        for name in control_plane
    ]
    assert starts == sorted(starts)  # apiservers, then controller managers, then schedulers
    assert set(versions(apiservers).values()) == {f"v{B}"}
    for name in control_plane:
        for release in RELEASES:
            assert current(name, release) == B
    journal = json.loads(JOURNAL_PATH.read_text())
    assert journal["status"] == "finished"
    assert {record["state"] for record in journal["nodes"].values()} == {"done"}

    before = snapshot(apiservers, control_plane)
    second = rollout("--to", B)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert snapshot(apiservers, control_plane) == before


@pytest.fixture
def at_b(apiservers, control_plane):
    """(Where the upgrade test leaves it.)"""
    roll_to(B, apiservers, control_plane)


def test_an_interrupted_rollout_resumes_without_redoing_finished_hosts(
    at_b, apiservers, control_plane
):
    """Back from B to A (the module ends where it began), the operator's session lost after
    the first host."""
    first = control_plane[0]
    key = f"kube-apiserver@{first}"
    back = ["--to", A, "--allow-downgrade"]
    journal = kill_once_journal_says_done(
        ["rollout", "control-plane", *back, INVENTORY], JOURNAL_PATH, key, 180
    )
    assert journal["nodes"][key]["state"] == "done"
    assert journal["status"] == "running"
    wait_ready(apiservers)  # the next apiserver may have been mid-restart

    refused = rollout(*back)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    with ReadyzPoller(apiservers) as seen:
        resumed = rollout(*back, "--resume", "--ready-timeout", "60")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"skip {key}: finished (journal)" in resumed.stdout
    assert f"{first}: install, switch and restart kube-apiserver" not in resumed.stdout
    assert first not in seen.unready and seen.none_ready == []
    assert set(versions(apiservers).values()) == {f"v{A}"}
    for name in control_plane:
        for release in RELEASES:
            assert current(name, release) == A
