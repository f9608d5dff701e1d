"""Kubelet rollout logic against a fake Kubernetes API and fake host work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pyinfra.api import Inventory, deploy
from pyinfra.operations import python, server

from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.journal import Journal, JournalError
from galley.ops.batches import Batches, HostOutcome
from galley.ops.drain import drain
from galley.ops.kubeapi import Eviction, eviction_blocker
from galley.ops.release_hosts import HostWork, ReleaseHosts, set_version
from galley.ops.rollout import (
    Plan,
    Rollout,
    RolloutError,
    checksum_problems,
    gate_problems,
    make_plan,
    parse_budget,
)
from galley.versions import skew_problems

OLD, NEW = "1.33.5", "1.33.6"
PDB_STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
    "reason": "TooManyRequests",
    "details": {
        "causes": [
            {
                "reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 1 healthy pods and has 1 currently",
            }
        ]
    },
    "code": 429,
}


def node(name: str, version: str = OLD, ready: bool = True, cordoned: bool = False) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "nodeInfo": {"kubeletVersion": f"v{version}"},
        },
    }


def pod(name: str, owner: str = "ReplicaSet", namespace: str = "default", **meta) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [{"kind": owner, "name": "x"}],
            **meta,
        }
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeApi:
    """Nodes, pods and evictions; PDB-protected pods answer 429 like the Eviction API."""

    def __init__(self, nodes: list[dict], pods: dict[str, list[dict]] | None = None) -> None:
        self.nodes_by_name = {n["metadata"]["name"]: n for n in nodes}
        self.pods = pods or {}
        self.protected: set[str] = set()
        self.evicted: list[str] = []
        self.cordons: list[str] = []
        self.max_unavailable = 0
        self.healthy = (True, "")

    def nodes(self) -> list[dict]:
        return list(self.nodes_by_name.values())

    def node(self, name: str) -> dict:
        return self.nodes_by_name[name]

    def set_unschedulable(self, name: str, value: bool) -> dict:
        self.nodes_by_name[name]["spec"]["unschedulable"] = value
        if value:
            self.cordons.append(name)
        cordoned = sum(bool(n["spec"].get("unschedulable")) for n in self.nodes())
        self.max_unavailable = max(self.max_unavailable, cordoned)
        return self.nodes_by_name[name]

    def pods_on(self, node: str) -> list[dict]:
        return list(self.pods.get(node, []))

    def evict(self, namespace: str, name: str) -> Eviction:
        if name in self.protected:
            return Eviction(False, eviction_blocker(PDB_STATUS))
        self.evicted.append(name)
        for pods in self.pods.values():
            pods[:] = [p for p in pods if p["metadata"]["name"] != name]
        return Eviction(True)

    def healthz(self) -> tuple[bool, str]:
        return self.healthy

    def set_version(self, name: str, version: str) -> None:
        self.nodes_by_name[name]["status"]["nodeInfo"]["kubeletVersion"] = f"v{version}"


class FakeHosts:
    """Switches the Node's reported version like a restarted kubelet would."""

    def __init__(self, api: FakeApi, never_healthy: set[str] = frozenset()) -> None:
        self.api = api
        self.never_healthy = never_healthy
        self.upgraded: list[list[str]] = []
        self.rolled_back: dict = {}
        self.etcd = {"etcd-1": (True, ""), "etcd-2": (True, ""), "etcd-3": (True, "")}

    def upgrade(self, names, record):
        record({name: {"kubelet": OLD, "kube-proxy": OLD} for name in names})
        self.upgraded.append(list(names))
        outcomes = {}
        for name in names:
            if name in self.never_healthy:
                outcomes[name] = HostOutcome("kubelet not healthy after 5s", 5.0)
            else:
                self.api.set_version(name, NEW)
                outcomes[name] = HostOutcome(None, 1.0)
        return outcomes

    def etcd_health(self):
        return self.etcd

    def rollback(self, versions):
        self.rolled_back.update(versions)
        for name, found in versions.items():
            self.api.set_version(name, found["kubelet"])
        return {name: HostOutcome(None, 1.0) for name in versions}


def rollout(api: FakeApi, hosts: FakeHosts, tmp_path, budget: int = 1, **kwargs) -> Rollout:
    clock = Clock()
    return Rollout(
        api,
        {"cp-1": api},
        hosts,
        budget,
        journal=Journal.start(tmp_path / "journal.json", NEW, resume=False),
        drain_timeout=10,
        ready_timeout=10,
        clock=clock,
        sleep=clock.sleep,
        out=lambda line: None,
        **kwargs,
    )


WORKERS = ["w-b", "w-a", "w-c"]  # inventory order, deliberately not sorted


def plan_for(api: FakeApi, budget: int = 1, done=()) -> Plan:
    return make_plan(WORKERS, {n: api.node(n) for n in WORKERS}, NEW, budget, done)


@pytest.mark.parametrize(
    ("text", "workers", "expected"),
    [("1", 5, 1), ("3", 5, 3), ("50%", 4, 2), ("10%", 4, 1), ("100%", 3, 3)],
)
def test_budget_counts_or_percentages(text, workers, expected):
    assert parse_budget(text, workers) == expected


@pytest.mark.parametrize("text", ["0", "-1", "x", "0%", "150%", "%"])
def test_budget_refuses_nonsense(text):
    with pytest.raises(RolloutError, match="max-unavailable"):
        parse_budget(text, 4)


def test_plan_keeps_inventory_order_batches_and_skips_nodes_at_target():
    api = FakeApi([node("w-a"), node("w-b"), node("w-c", NEW), node("w-d")])
    plan = make_plan(
        ["w-d", "w-b", "w-c", "w-a"], {n: api.node(n) for n in api.nodes_by_name}, NEW, 2
    )
    assert [[s.node for s in batch] for batch in plan.batches] == [["w-d", "w-b"], ["w-a"]]
    assert plan.skipped == [("w-c", "already at v1.33.6")]
    text = "\n".join(plan.describe())
    assert "batch 1: w-d v1.33.5 -> v1.33.6" in text and "skip w-c: already at v1.33.6" in text


def test_plan_skips_nodes_the_journal_finished():
    api = FakeApi([node(n) for n in WORKERS])
    plan = plan_for(api, done=["w-b"])
    assert [s.node for batch in plan.batches for s in batch] == ["w-a", "w-c"]
    assert ("w-b", "finished (journal)") in plan.skipped


def test_skew_allows_a_newer_patch_and_three_minors_behind():
    assert skew_problems("1.33.6", {"a": "v1.33.5"}) == []
    assert skew_problems("1.30.0", {"a": "v1.33.5"}) == []


def test_skew_refuses_newer_minor_and_more_than_three_behind():
    (newer,) = skew_problems("1.34.0", {"a": "v1.33.5", "b": "v1.34.1"})
    assert "newer than the apiserver a" in newer
    (old,) = skew_problems("1.29.9", {"a": "v1.33.5"})
    assert "more than 3 minor versions older" in old
    assert skew_problems("2.33.0", {"a": "v1.33.5"})


def test_gates_stop_on_an_unhealthy_apiserver():
    found = gate_problems({"https://cp-2:6443": (False, "500 etcd failed")}, [], ["w-a"], 1)
    assert found == ["apiserver https://cp-2:6443: 500 etcd failed"]


def test_gates_stop_on_an_unhealthy_etcd_member():
    etcd = {"etcd-1": (True, ""), "etcd-2": (False, "context deadline exceeded")}
    found = gate_problems({"s": (True, "")}, [], ["w-a"], 1, etcd)
    assert found == ["etcd member etcd-2: context deadline exceeded"]


def test_gates_count_other_unavailable_nodes_against_the_budget():
    nodes = [node("w-a"), node("w-b", ready=False), node("w-c", cordoned=True)]
    ok = {"s": (True, "")}
    (problem,) = gate_problems(ok, nodes, ["w-a"], 1)
    assert "w-b NotReady" in problem and "w-c cordoned" in problem
    assert gate_problems(ok, nodes, ["w-a"], 3) == []
    # the batch's own nodes (cordoned by an interrupted run) do not count twice
    assert gate_problems(ok, [node("w-a", cordoned=True), node("w-b")], ["w-a"], 1) == []


def test_drain_evicts_but_leaves_daemonset_and_mirror_pods():
    mirror = pod("static", owner="Node", annotations={"kubernetes.io/config.mirror": "abc"})
    api = FakeApi([node("w-a")], {"w-a": [pod("web-1"), pod("flannel", owner="DaemonSet"), mirror]})
    clock = Clock()
    assert drain(api, "w-a", 10, clock, clock.sleep) == []
    assert api.evicted == ["web-1"]


def test_drain_times_out_naming_the_pdb():
    api = FakeApi([node("w-a")], {"w-a": [pod("web-1", namespace="shop")]})
    api.protected.add("web-1")
    clock = Clock()
    assert drain(api, "w-a", 5, clock, clock.sleep) == ["shop/web-1: PodDisruptionBudget web-pdb"]
    assert clock.now >= 5


def test_eviction_blocker_falls_back_to_the_message():
    assert eviction_blocker({"message": "too many requests"}) == "too many requests"


def test_rollout_upgrades_one_node_at_a_time_in_order(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api)
    assert rollout(api, hosts, tmp_path).run(plan_for(api)) == 0
    assert api.cordons == WORKERS
    assert api.max_unavailable == 1
    assert hosts.upgraded == [["w-b"], ["w-a"], ["w-c"]]
    assert not any(n["spec"]["unschedulable"] for n in api.nodes())
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "finished"
    assert {n: r["state"] for n, r in journal["nodes"].items()} == dict.fromkeys(WORKERS, "done")
    assert plan_for(api).batches == []  # a second run has nothing to do


def test_rollout_batches_follow_the_budget(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api)
    assert rollout(api, hosts, tmp_path, budget=2).run(plan_for(api, 2)) == 0
    assert hosts.upgraded == [["w-b", "w-a"], ["w-c"]]
    assert api.max_unavailable == 2


def test_a_node_that_does_not_come_back_is_rolled_back_and_the_rest_untouched(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api, never_healthy={"w-b"})
    run = rollout(api, hosts, tmp_path)
    assert run.run(plan_for(api)) == 1
    assert hosts.rolled_back == {"w-b": {"kubelet": OLD, "kube-proxy": OLD}}
    assert api.node("w-b")["spec"]["unschedulable"] is False
    assert api.cordons == ["w-b"]
    assert hosts.upgraded == [["w-b"]]
    report = "\n".join(run.report)
    assert "kubelet not healthy" in report and "rolled back to 1.33.5 and uncordoned" in report
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "failed" and journal["nodes"]["w-b"]["state"] == "rolled-back"


def test_a_node_ready_at_the_old_version_counts_as_not_back(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api)
    hosts.upgrade = lambda names, record: (
        record({n: {"kubelet": OLD, "kube-proxy": OLD} for n in names})
        or {n: HostOutcome(None, 0.5) for n in names}
    )
    run = rollout(api, hosts, tmp_path)
    assert run.run(plan_for(api)) == 1
    assert "reports v1.33.5" in "\n".join(run.report)
    assert "w-b" in hosts.rolled_back


def test_a_blocked_drain_uncordons_and_names_the_pdb(tmp_path):
    api = FakeApi([node(n) for n in WORKERS], {"w-b": [pod("web-1")]})
    api.protected.add("web-1")
    hosts = FakeHosts(api)
    run = rollout(api, hosts, tmp_path)
    assert run.run(plan_for(api)) == 1
    assert hosts.upgraded == []
    assert not any(n["spec"].get("unschedulable") for n in api.nodes())
    assert "default/web-1: PodDisruptionBudget web-pdb" in "\n".join(run.report)


def test_a_failed_gate_touches_nothing(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    api.healthy = (False, "500 etcd failed")
    hosts = FakeHosts(api)
    run = rollout(api, hosts, tmp_path)
    assert run.run(plan_for(api)) == 1
    assert api.cordons == [] and hosts.upgraded == []
    assert "gate before batch 1" in run.report[0]


def test_a_node_cordoned_before_the_rollout_stays_cordoned_and_uses_budget(tmp_path):
    api = FakeApi([node("w-b", cordoned=True), node("w-a"), node("w-c")])
    run = rollout(api, FakeHosts(api), tmp_path / "1")
    assert run.run(plan_for(api)) == 1
    assert "w-b cordoned" in run.report[1]
    api = FakeApi([node("w-b", cordoned=True), node("w-a"), node("w-c")])
    assert rollout(api, FakeHosts(api), tmp_path / "2", budget=2).run(plan_for(api)) == 0
    assert api.node("w-b")["spec"]["unschedulable"] is True
    assert api.node("w-a")["spec"]["unschedulable"] is False


def test_resume_skips_finished_nodes_and_keeps_the_recorded_previous_version(tmp_path):
    path = tmp_path / "journal.json"
    first = Journal.start(path, NEW, resume=False)
    first.update("w-b", state="done")
    first.update("w-a", state="upgrading", previous={"kubelet": "1.33.4", "kube-proxy": "1.33.4"})
    with pytest.raises(JournalError, match="--resume"):
        Journal.start(path, NEW, resume=False)
    with pytest.raises(JournalError, match=r"not 1\.33\.7"):
        Journal.start(path, "1.33.7", resume=True)
    resumed = Journal.start(path, NEW, resume=True)
    assert resumed.done() == ["w-b"]
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api, never_healthy={"w-a"})
    run = Rollout(
        api, {"s": api}, hosts, 1, journal=resumed, out=lambda line: None, ready_timeout=0
    )
    assert run.run(plan_for(api, done=resumed.done())) == 1
    assert hosts.upgraded == [["w-a"]]
    assert hosts.rolled_back == {"w-a": {"kubelet": "1.33.4", "kube-proxy": "1.33.4"}}


def test_resume_needs_a_journal(tmp_path):
    with pytest.raises(JournalError, match="no rollout journal"):
        Journal.start(tmp_path / "none.json", NEW, resume=True)


def test_a_target_without_checksums_is_refused():
    sums = {OLD: {"amd64": "a" * 64}}
    data = {"arch": "amd64", "kubelet_checksums": sums, "kube_proxy_checksums": sums}
    inventory = Inventory(([("w-a", data), ("cp-1", {})], {}), workers=(["w-a"], {}))
    set_version(inventory, "workers", OLD)
    assert checksum_problems(inventory, [KUBELET, KUBE_PROXY]) == []
    set_version(inventory, "workers", NEW)
    found = "\n".join(checksum_problems(inventory, [KUBELET, KUBE_PROXY]))
    assert "no sha256 for kubelet 1.33.6 on amd64" in found
    assert "no sha256 for kube_proxy 1.33.6 on amd64" in found


@deploy("Test host work")
def _host_work(outcomes, fail: bool) -> None:
    server.shell(name="fail" if fail else "succeed", commands=["false" if fail else "true"])
    python.call(
        name="healthy",
        function=lambda state, host: setattr(outcomes[host.name], "healthy", True),
    )


def test_host_batches_reuse_one_inventory_and_report_unfinished_hosts():
    inventory = Inventory((["@local"], {}), workers=(["@local"], {}))
    batches = Batches(inventory)
    assert batches.run(["@local"], _host_work, fail=False)["@local"].error is None
    failed = batches.run(["@local"], _host_work, fail=True)["@local"]
    assert failed.error is not None and "did not finish" in failed.error
    assert batches.run(["@local"], _host_work, fail=False)["@local"].error is None


def test_a_corrupt_journal_is_one_clear_error(tmp_path):
    path = tmp_path / "journal.json"
    path.write_text('{"target": "1.33.6", "status": "runn')
    with pytest.raises(JournalError, match=r"journal .* is not valid JSON"):
        Journal.start(path, NEW, resume=True)


class BrokenHosts(FakeHosts):
    """Host work that fails with an error nobody planned for."""

    def upgrade(self, names, record):
        raise RuntimeError("connection to lab-worker-1 reset")


def test_an_unexpected_error_uncordons_what_it_cordoned_and_records_the_end(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    run = rollout(api, BrokenHosts(api), tmp_path)
    with pytest.raises(RuntimeError):
        run.run(plan_for(api))
    assert not any(api.node(n)["spec"].get("unschedulable") for n in WORKERS)
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "failed"
    assert journal["error"] == "RuntimeError: connection to lab-worker-1 reset"
    assert Journal.start(tmp_path / "journal.json", NEW, resume=False).data["nodes"] == {}


def test_an_interrupted_rollout_is_resumable_and_a_plain_rerun_refused(tmp_path):
    api = FakeApi([node(n) for n in WORKERS])
    hosts = FakeHosts(api)
    hosts.upgrade = lambda names, record: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        rollout(api, hosts, tmp_path).run(plan_for(api))
    assert not any(api.node(n)["spec"].get("unschedulable") for n in WORKERS)
    with pytest.raises(JournalError, match="interrupted rollout"):
        Journal.start(tmp_path / "journal.json", NEW, resume=False)
    assert Journal.start(tmp_path / "journal.json", NEW, resume=True).data["status"] == "running"


def test_release_hosts_wait_for_the_health_command_and_record_previous_versions():
    inventory = Inventory((["@local"], {}), workers=(["@local"], {}))
    healthy = ReleaseHosts(inventory, HostWork("thing", (), (), lambda host: "true"), 5)
    recorded = []
    outcome = healthy.upgrade(["@local"], recorded.append)["@local"]
    assert (outcome.error, outcome.healthy, recorded) == (None, True, [{"@local": {}}])
    never = ReleaseHosts(inventory, HostWork("thing", (), (), lambda host: "false"), 0)
    outcome = never.rollback({"@local": {}})["@local"]
    assert outcome.error is not None and outcome.error.startswith("thing not healthy after 0s")


def test_a_rollout_running_in_another_process_is_named_never_called_interrupted(tmp_path):
    path = tmp_path / "journal.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from galley.journal import Journal\n"
            f"Journal.start(Path({str(path)!r}), {NEW!r}, resume=False).update()\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "started"
        for resume in (False, True):
            with pytest.raises(JournalError) as refused:
                Journal.start(path, NEW, resume=resume)
            message = str(refused.value)
            assert f"a rollout to {NEW} is running now: " in message
            assert f"pid {holder.pid}" in message and "wait for it to finish" in message
            assert "remove" not in message and "interrupted" not in message
    finally:
        holder.kill()
        holder.wait()
    # Its holder is gone: now it is an interrupted rollout, resumable.
    with pytest.raises(JournalError, match="interrupted rollout"):
        Journal.start(path, NEW, resume=False)
    assert Journal.start(path, NEW, resume=True).data["pid"] == os.getpid()
