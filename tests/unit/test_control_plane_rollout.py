"""Control-plane rollout logic: the version rules, the plan, the gates and the rollback
decisions, against fake apiservers and fake host work."""

from __future__ import annotations

import json

import pytest

from galley.journal import Journal
from galley.ops import control_plane
from galley.ops.batches import HostOutcome
from galley.ops.control_plane import (
    APISERVER,
    ControlPlaneRollout,
    Plan,
    Step,
    gate_problems,
    make_plan,
    version_problems,
)
from galley.ops.etcd_snapshot import SnapshotError
from galley.ops.rolling import RolloutError
from galley.versions import upgrade_problems
from tests.unit.test_rollout import Clock

OLD, NEW = "1.33.5", "1.33.6"
CM, SCHED = "kube-controller-manager", "kube-scheduler"
HOSTS = ["cp-b", "cp-a"]  # inventory order, deliberately not sorted
OK = (True, "")


# --- version rules ---------------------------------------------------------------------------


def test_a_patch_or_the_next_minor_is_an_upgrade():
    assert upgrade_problems(NEW, {"cp-a": OLD, "cp-b": OLD}) == []
    assert upgrade_problems("1.34.0", {"cp-a": "v1.33.5"}) == []
    # a half-done rollout: one apiserver already at the target
    assert upgrade_problems("1.34.0", {"cp-a": "1.34.0", "cp-b": "1.33.5"}) == []


def test_a_skipped_minor_or_another_major_is_refused():
    (skipped,) = upgrade_problems("1.35.0", {"cp-a": "1.33.5"})
    assert "skips a minor version" in skipped and "go to 1.34 first" in skipped
    (major,) = upgrade_problems("2.0.0", {"cp-a": "1.33.5"})
    assert "another major version" in major
    # one apiserver left behind: the target skips a minor for it
    assert len(upgrade_problems("1.35.0", {"cp-a": "1.34.2", "cp-b": "1.33.5"})) == 1


def test_a_downgrade_needs_the_flag_and_never_crosses_two_minors():
    (refused,) = upgrade_problems(OLD, {"cp-a": NEW})
    assert "a downgrade needs --allow-downgrade" in refused
    assert upgrade_problems(OLD, {"cp-a": NEW}, allow_downgrade=True) == []
    assert upgrade_problems("1.32.9", {"cp-a": NEW}, allow_downgrade=True) == []
    (far,) = upgrade_problems("1.31.0", {"cp-a": NEW}, allow_downgrade=True)
    assert "more than one minor version older" in far


def test_a_pre_release_of_a_newer_patch_is_an_upgrade():
    assert upgrade_problems("1.33.7-galley.broken", {"cp-a": OLD}) == []


def test_kubelets_must_stay_within_the_skew_of_the_target():
    assert version_problems("1.34.0", {"cp-a": OLD}, {"w-1": "v1.33.5", "w-2": "v1.31.0"}) == []
    (old,) = version_problems("1.34.0", {"cp-a": "1.33.5"}, {"w-1": "v1.30.9"})
    assert "w-1's kubelet v1.30.9 is more than 3 minor versions older" in old
    (newer,) = version_problems(
        "1.32.4", {"cp-a": "1.33.5"}, {"w-1": "v1.33.5"}, allow_downgrade=True
    )
    assert "w-1's kubelet v1.33.5 would be newer than the apiserver at the target" in newer


# --- the plan ---------------------------------------------------------------------------------


def versions(apiserver=OLD, cm=OLD, sched=OLD) -> dict[str, dict[str, str]]:
    """component -> host -> version, every host alike."""
    return {
        APISERVER: dict.fromkeys(HOSTS, apiserver),
        CM: dict.fromkeys(HOSTS, cm),
        SCHED: dict.fromkeys(HOSTS, sched),
    }


def order(plan: Plan) -> list[str]:
    return [step.key for step in plan.steps]


def test_plan_apiservers_then_controller_managers_then_schedulers_in_inventory_order():
    plan = make_plan(HOSTS, versions(), NEW)
    assert order(plan) == [
        f"{APISERVER}@cp-b",
        f"{APISERVER}@cp-a",
        f"{CM}@cp-b",
        f"{CM}@cp-a",
        f"{SCHED}@cp-b",
        f"{SCHED}@cp-a",
    ]
    text = "\n".join(plan.describe())
    assert "  1. cp-b kube-apiserver v1.33.5 -> v1.33.6" in text
    assert "  6. cp-a kube-scheduler v1.33.5 -> v1.33.6" in text


def test_plan_skips_what_is_at_the_target_or_finished_and_a_second_run_does_nothing():
    plan = make_plan(
        HOSTS,
        {**versions(), APISERVER: {"cp-b": NEW, "cp-a": OLD}},
        NEW,
        done=[f"{CM}@cp-a"],
    )
    assert f"{APISERVER}@cp-b" not in order(plan) and f"{CM}@cp-a" not in order(plan)
    assert (f"{APISERVER}@cp-b", "already at v1.33.6") in plan.skipped
    assert (f"{CM}@cp-a", "finished (journal)") in plan.skipped
    done = make_plan(HOSTS, versions(NEW, NEW, NEW), NEW)
    assert done.steps == [] and "  nothing to do" in done.describe()


def test_a_downgrade_across_a_minor_goes_schedulers_first():
    plan = make_plan(HOSTS, versions("1.34.1", "1.34.1", "1.34.1"), "1.33.9", downgrade=True)
    assert [step.component for step in plan.steps] == [SCHED, SCHED, CM, CM, APISERVER, APISERVER]


# --- gates ------------------------------------------------------------------------------------


def test_the_gate_of_an_apiserver_ignores_its_own_readiness_only():
    ready = {"cp-a": (False, "connection refused"), "cp-b": OK}
    assert gate_problems(Step(APISERVER, "cp-a", OLD), ready, {}) == []
    assert gate_problems(Step(APISERVER, "cp-b", OLD), ready, {}) == [
        "apiserver cp-a: connection refused"
    ]
    # the controller manager talks to its own apiserver: every one must be ready
    assert gate_problems(Step(CM, "cp-a", OLD), ready, {}) == ["apiserver cp-a: connection refused"]


def test_the_gate_stops_on_an_unhealthy_etcd_member():
    etcd = {"etcd-1": OK, "etcd-2": (False, "context deadline exceeded")}
    assert gate_problems(Step(APISERVER, "cp-a", OLD), {"cp-b": OK}, etcd) == [
        "etcd member etcd-2: context deadline exceeded"
    ]


# --- the run, with fakes ----------------------------------------------------------------------


class FakeApiserver:
    """One host's apiserver: ready or not, and the version it reports."""

    def __init__(self, version: str = OLD) -> None:
        self.ready = OK
        self.reported = version

    def readyz(self) -> tuple[bool, str]:
        return self.ready

    def version(self) -> str:
        return f"v{self.reported}"


class FakeHosts:
    """One component's host work: switches a host's version like a restart would; a host in
    ``never_healthy`` stays unhealthy (and its apiserver not ready)."""

    def __init__(self, component: str, world: World) -> None:
        self.component = component
        self.world = world

    def upgrade(self, names, record):
        record(
            {name: {self.component: self.world.versions[self.component][name]} for name in names}
        )
        outcomes = {}
        for name in names:
            self.world.upgraded.append(f"{self.component}@{name}")
            self.world.switch(self.component, name, NEW)
            if (self.component, name) in self.world.never_healthy:
                self.world.apiservers[name].ready = (False, "500 never ready")
                outcomes[name] = HostOutcome(f"{self.component} not healthy after 5s", 5.0)
            else:
                outcomes[name] = HostOutcome(None, 1.0, healthy=True)
        return outcomes

    def rollback(self, versions):
        outcomes = {}
        for name, found in versions.items():
            self.world.rolled_back.append(f"{self.component}@{name}")
            if self.world.rollback_fails:
                outcomes[name] = HostOutcome(f"{self.component} not healthy after 5s", 5.0)
                continue
            self.world.switch(self.component, name, found[self.component])
            if self.component == APISERVER:
                self.world.apiservers[name].ready = OK
            outcomes[name] = HostOutcome(None, 1.0, healthy=True)
        return outcomes

    def etcd_health(self):
        return self.world.etcd


class World:
    """Two control-plane hosts at OLD, three etcd members, and what the rollout did."""

    def __init__(self, never_healthy=frozenset(), rollback_fails: bool = False) -> None:
        self.versions = versions()
        self.apiservers = {name: FakeApiserver() for name in HOSTS}
        self.never_healthy = set(never_healthy)
        self.rollback_fails = rollback_fails
        self.etcd = {"etcd-1": OK, "etcd-2": OK, "etcd-3": OK}
        self.upgraded: list[str] = []
        self.rolled_back: list[str] = []
        self.hosts = {c: FakeHosts(c, self) for c in (APISERVER, CM, SCHED)}

    def switch(self, component: str, host: str, version: str) -> None:
        self.versions[component][host] = version
        if component == APISERVER:
            self.apiservers[host].reported = version

    def plan(self, done=()) -> Plan:
        return make_plan(HOSTS, self.versions, NEW, done)


def runner(world: World, tmp_path, journal: Journal | None = None) -> ControlPlaneRollout:
    clock = Clock()
    return ControlPlaneRollout(
        world.apiservers,
        world.hosts,
        lambda: world.etcd,
        ready_timeout=10,
        journal=journal or Journal.start(tmp_path / "journal.json", NEW, resume=False),
        clock=clock,
        sleep=clock.sleep,
        out=lambda line: None,
    )


def journal_of(tmp_path) -> dict:
    return json.loads((tmp_path / "journal.json").read_text())


def test_the_control_plane_is_upgraded_one_host_at_a_time_in_order(tmp_path):
    world = World()
    assert runner(world, tmp_path).run(world.plan()) == 0
    assert world.upgraded == order(make_plan(HOSTS, versions(), NEW))
    assert world.versions == versions(NEW, NEW, NEW)
    journal = journal_of(tmp_path)
    assert journal["status"] == "finished"
    assert {record["state"] for record in journal["nodes"].values()} == {"done"}
    assert journal["nodes"][f"{APISERVER}@cp-b"]["previous"] == {APISERVER: OLD}
    assert world.plan().steps == []  # a second run does nothing


def test_an_apiserver_not_ready_stops_the_run_before_the_next_host(tmp_path):
    world = World()
    world.apiservers["cp-a"].ready = (False, "500 [-]etcd failed")
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert world.upgraded == []
    assert run.report[0] == f"rollout stopped: gate before {APISERVER} on cp-b"
    assert "apiserver cp-a: 500 [-]etcd failed" in run.report[1]


def test_an_unhealthy_etcd_member_stops_the_run_before_anything(tmp_path):
    world = World()
    world.etcd["etcd-2"] = (False, "connection refused")
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert world.upgraded == [] and "etcd member etcd-2" in "\n".join(run.report)


def test_a_never_ready_apiserver_is_switched_back_and_the_others_untouched(tmp_path):
    world = World(never_healthy={(APISERVER, "cp-b")})
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert world.upgraded == [f"{APISERVER}@cp-b"]
    assert world.rolled_back == [f"{APISERVER}@cp-b"]
    assert world.versions == versions()
    report = "\n".join(run.report)
    assert f"rollout stopped: {APISERVER} on cp-b did not come back at v{NEW}" in report
    assert f"cp-b: {APISERVER} rolled back to {OLD}" in report
    journal = journal_of(tmp_path)
    assert journal["status"] == "failed"
    assert journal["nodes"][f"{APISERVER}@cp-b"]["state"] == "rolled-back"


def test_an_apiserver_ready_at_the_old_version_counts_as_not_back(tmp_path):
    world = World()
    world.hosts[APISERVER].upgrade = lambda names, record: (
        record({n: {APISERVER: OLD} for n in names})
        or {n: HostOutcome(None, 0.5, healthy=True) for n in names}
    )
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert "reports v1.33.5" in "\n".join(run.report)
    assert world.rolled_back == [f"{APISERVER}@cp-b"]


def test_a_controller_manager_that_does_not_come_back_is_rolled_back(tmp_path):
    world = World(never_healthy={(CM, "cp-a")})
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert world.upgraded[-1] == f"{CM}@cp-a" and world.rolled_back == [f"{CM}@cp-a"]
    assert world.versions[CM] == {"cp-b": NEW, "cp-a": OLD}
    assert world.versions[SCHED] == dict.fromkeys(HOSTS, OLD)


def test_a_failed_rollback_is_reported_and_nothing_else_runs(tmp_path):
    world = World(never_healthy={(APISERVER, "cp-b")}, rollback_fails=True)
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert f"cp-b: rollback of {APISERVER} failed" in "\n".join(run.report)
    assert world.upgraded == [f"{APISERVER}@cp-b"]
    assert journal_of(tmp_path)["nodes"][f"{APISERVER}@cp-b"]["state"] == "failed"


def test_without_a_recorded_previous_version_nothing_is_switched_back(tmp_path):
    world = World(never_healthy={(APISERVER, "cp-b")})
    world.hosts[APISERVER].upgrade = lambda names, record: {
        n: HostOutcome("the host work did not finish (pyinfra stopped)") for n in names
    }
    run = runner(world, tmp_path)
    assert run.run(world.plan()) == 1
    assert world.rolled_back == []
    assert "no previous version recorded: fix it by hand" in "\n".join(run.report)


def test_resume_skips_finished_steps_and_keeps_the_first_recorded_previous(tmp_path):
    path = tmp_path / "journal.json"
    first = Journal.start(path, NEW, resume=False)
    first.update(f"{APISERVER}@cp-b", state="done")
    first.update(f"{APISERVER}@cp-a", state="upgrading", previous={APISERVER: "1.33.4"})
    resumed = Journal.start(path, NEW, resume=True)
    world = World(never_healthy={(APISERVER, "cp-a")})
    run = runner(world, tmp_path, resumed)
    assert run.run(world.plan(done=resumed.done())) == 1
    assert world.upgraded == [f"{APISERVER}@cp-a"]
    assert world.versions[APISERVER]["cp-a"] == "1.33.4"
    assert f"cp-a: {APISERVER} rolled back to 1.33.4" in "\n".join(run.report)


def test_an_unexpected_error_is_recorded_and_raised(tmp_path):
    world = World()

    def broken(names, record):
        raise RuntimeError("connection to cp-b reset")

    world.hosts[APISERVER].upgrade = broken
    with pytest.raises(RuntimeError):
        runner(world, tmp_path).run(world.plan())
    journal = journal_of(tmp_path)
    assert journal["status"] == "failed"
    assert journal["error"] == "RuntimeError: connection to cp-b reset"


def test_a_rollout_starts_with_one_etcd_snapshot_and_none_means_no_change(monkeypatch, tmp_path):
    taken, ran = [], []
    monkeypatch.setattr(
        control_plane,
        "operator_snapshot",
        lambda inventory, log: taken.append(inventory) or (tmp_path / "lab-etcd-r7.db", None),
    )
    journal = Journal.start(tmp_path / "rollout.json", "1.33.6", resume=False)
    assert control_plane._snapshot_first("inv", journal, lambda: ran.append(1) or 0) == 0
    assert control_plane._snapshot_first("inv", journal, lambda: ran.append(2) or 0) == 0
    assert taken == ["inv"] and ran == [1, 2]  # a resumed run keeps the first snapshot
    assert journal.data["snapshot"] == str(tmp_path / "lab-etcd-r7.db")

    def unhealthy(inventory, log):
        raise SnapshotError("no healthy etcd member to snapshot")

    monkeypatch.setattr(control_plane, "operator_snapshot", unhealthy)
    fresh = Journal.start(tmp_path / "other.json", "1.33.6", resume=False)
    with pytest.raises(RolloutError, match="no etcd snapshot, so no change"):
        control_plane._snapshot_first("inv", fresh, lambda: ran.append(3) or 0)
    assert ran == [1, 2]
