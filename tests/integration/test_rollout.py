"""`galley rollout kubelet` on the lab: the real CLI against the apiserver and kubelet stand-ins.

Version A is the deployed kubelet, B the mirror's upgrade, and the mirror's never-healthy
build stands for a bad release. Every test starts from all workers at A (rolled there by the
command itself) and records, while the command runs, which Nodes are cordoned or NotReady.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time

import pytest

from galley.lab.artifacts import (
    KUBERNETES_BROKEN_VERSION,
    KUBERNETES_UPGRADE_VERSION,
    KUBERNETES_VERSION,
)
from galley.lab.images import BUSYBOX_VERSION
from galley.ops.kubeapi import ApiError, KubeApi, kubelet_version, node_ready, node_unschedulable
from galley.ops.rollout import JOURNAL

from .conftest import (
    admin_files,
    hosts_of,
    kill_once_journal_says_done,
    run_cli,
    run_deploy,
    ssh,
    steadily_ready,
    wait_for,
)

INVENTORY = "inventories/lab.py"
BUSYBOX = f"docker.io/library/busybox:{BUSYBOX_VERSION}"
A, B = KUBERNETES_VERSION, KUBERNETES_UPGRADE_VERSION
JOURNAL_PATH = admin_files().directory / JOURNAL


def rollout(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return run_cli("galley", "rollout", "kubelet", *args, INVENTORY, check=check)


@pytest.fixture(scope="module")
def api(cluster) -> KubeApi:
    first_cp = next(d.address for d in cluster.droplets if "control_plane" in d.roles)
    return KubeApi(f"https://{first_cp}:6443", admin_files())


@pytest.fixture(scope="module")
def workers(cluster) -> list[str]:
    return hosts_of(cluster, "workers")


class Recorder:
    """Polls the Nodes while a command runs: cordon order and the most unavailable at once."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.cordoned: list[str] = []
        self.most_unavailable = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            nodes = self.api.nodes()
            down = [n for n in nodes if node_unschedulable(n) or not node_ready(n)]
            self.most_unavailable = max(self.most_unavailable, len(down))
            for node in nodes:
                name = node["metadata"]["name"]
                if node_unschedulable(node) and name not in self.cordoned:
                    self.cordoned.append(name)
            time.sleep(0.1)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def versions(api: KubeApi) -> dict[str, str]:
    return {n["metadata"]["name"]: kubelet_version(n) for n in api.nodes()}


def current(name: str, binary: str = "kubelet") -> str:
    return ssh(name, f"readlink /opt/galley/{binary}/current").strip()


@pytest.fixture
def at_a(api, workers):
    """Every worker at A, uncordoned, no journal, no seeded pods or PDBs."""
    JOURNAL_PATH.unlink(missing_ok=True)
    moved = {name for name in workers if versions(api)[name] != f"v{A}"}
    result = rollout("--to", A, "--ready-timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    JOURNAL_PATH.unlink(missing_ok=True)
    assert {versions(api)[name] for name in workers} == {f"v{A}"}
    # A kubelet just restarted (here, or by an earlier module's deploy) may post one more
    # NotReady before it settles: start from Nodes steadily Ready.
    if moved or not all(node_ready(n) for n in api.nodes() if n["metadata"]["name"] in workers):
        assert steadily_ready(api, workers), {
            n["metadata"]["name"]: node_ready(n) for n in api.nodes()
        }
    yield
    for path in (
        "/api/v1/namespaces/default/pods/web-1",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web-pdb",
    ):
        with contextlib.suppress(ApiError):  # not seeded by this test
            api.request("DELETE", path)


def node_ready_pod(api: KubeApi, namespace: str, name: str) -> bool:
    """Whether the pod runs and is Ready."""
    pod = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def snapshot(api: KubeApi, workers: list[str]) -> dict:
    files = "/etc/systemd/system/kubelet.service /etc/systemd/system/kube-proxy.service"
    hosts = {
        name: (
            ssh(name, f"cat {files}; readlink /usr/local/bin/kubelet /usr/local/bin/kube-proxy"),
            current(name),
            current(name, "kube-proxy"),
        )
        for name in workers
    }
    nodes = {
        n["metadata"]["name"]: (n.get("spec"), kubelet_version(n), node_ready(n))
        for n in api.nodes()
    }
    return {"hosts": hosts, "nodes": nodes}


def test_dry_run_prints_the_plan_and_changes_nothing(at_a, api, workers):
    before = snapshot(api, workers)
    result = rollout("--to", B, "--dry-run")
    assert result.returncode == 0, result.stderr
    for number, name in enumerate(workers, 1):
        assert f"batch {number}: {name} v{A} -> v{B}" in result.stdout
    assert snapshot(api, workers) == before
    assert not JOURNAL_PATH.exists()


def test_a_version_without_checksums_is_refused_before_anything(at_a, api, workers):
    before = snapshot(api, workers)
    result = rollout("--to", "1.33.99")
    assert result.returncode == 2
    assert "no sha256 for kubelet 1.33.99" in result.stderr
    assert "nothing was changed" in result.stderr
    assert snapshot(api, workers) == before


def test_upgrade_one_node_at_a_time_then_nothing_to_do(at_a, api, workers):
    with Recorder(api) as seen:
        result = rollout("--to", B, "--ready-timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert seen.cordoned == workers  # inventory order, one batch each
    assert seen.most_unavailable == 1
    assert {versions(api)[name] for name in workers} == {f"v{B}"}
    assert not any(node_unschedulable(n) for n in api.nodes())
    assert {current(name) for name in workers} == {B}
    assert {current(name, "kube-proxy") for name in workers} == {B}
    assert f"{workers[0]}: uncordon" in result.stdout

    with Recorder(api) as again:
        second = rollout("--to", B)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert again.cordoned == []


def test_a_workers_deploy_after_a_rollout_restarts_the_version_it_switches_back_to(
    at_a, api, workers
):
    # group_data still says A: the deploy switches `current` back to the installed A, which
    # leaves the binary's link and mtime as they were; the kubelet must restart all the same.
    assert rollout("--to", B, "--ready-timeout", "60").returncode == 0
    code, _, output = run_deploy("workers")
    assert code == 0, output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {versions(api)[n] for n in workers} != {f"v{A}"}:
        time.sleep(1)
    assert {versions(api)[name] for name in workers} == {f"v{A}"}
    assert {current(name) for name in workers} == {A}


def test_a_never_healthy_build_is_rolled_back_and_the_run_stops(at_a, api, workers):
    first, rest = workers[0], workers[1:]
    with Recorder(api) as seen:
        result = rollout("--to", KUBERNETES_BROKEN_VERSION, "--ready-timeout", "15")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{first}: rolled back to {A} and uncordoned" in result.stdout
    assert "kubelet not healthy" in result.stdout
    assert seen.cordoned == [first]
    node = api.node(first)
    assert (kubelet_version(node), node_ready(node), node_unschedulable(node)) == (
        f"v{A}",
        True,
        False,
    )
    assert current(first) == A
    for name in rest:
        assert current(name) == A
        listing = ssh(name, "ls /opt/galley/kubelet")
        assert KUBERNETES_BROKEN_VERSION not in listing


def test_a_pdb_blocking_eviction_stops_the_drain_and_uncordons(at_a, api, workers):
    first = workers[0]
    labels = {"app": "web"}
    api.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "labels": labels},
            "spec": {
                "nodeName": first,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "web", "image": BUSYBOX, "command": ["sleep", "3600"]},
                ],
            },
        },
    )
    # Running and Ready: a Pending pod is evicted whatever its budget says.
    assert wait_for(lambda: node_ready_pod(api, "default", "web-1"), 120)
    api.request(
        "POST",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        json={
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web-pdb", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        },
    )
    with Recorder(api) as seen:
        result = rollout("--to", B, "--drain-timeout", "5")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "default/web-1: PodDisruptionBudget web-pdb" in result.stdout
    assert seen.cordoned == [first]
    assert not any(node_unschedulable(n) for n in api.nodes())
    assert {versions(api)[name] for name in workers} == {f"v{A}"}
    assert {current(name) for name in workers} == {A}


def test_an_interrupted_rollout_resumes_without_redoing_finished_nodes(at_a, api, workers):
    first = workers[0]
    journal = kill_once_journal_says_done(
        ["rollout", "kubelet", "--to", B, INVENTORY], JOURNAL_PATH, first, 120
    )
    assert journal["nodes"][first]["state"] == "done"
    assert journal["status"] == "running"

    refused = rollout("--to", B)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    with Recorder(api) as seen:
        resumed = rollout("--to", B, "--resume", "--ready-timeout", "60")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"skip {first}: finished (journal)" in resumed.stdout
    assert first not in seen.cordoned
    assert {versions(api)[name] for name in workers} == {f"v{B}"}
    assert not any(node_unschedulable(n) for n in api.nodes())
