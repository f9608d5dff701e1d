"""galley.report's pure part: tables and problems from fact values, text and JSON output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from galley.facts import ApiProxyBackends
from galley.ops.kubeapi import node_health
from galley.report import analyse, as_json, render

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def cert(cn: str, days: float, lifetime_days: float = 30) -> dict:
    """A certificate fact: ``days`` left of a ``lifetime_days`` lifetime."""
    not_after = NOW + timedelta(days=days)
    return {
        "cn": cn,
        "not_before": not_after - timedelta(days=lifetime_days),
        "not_after": not_after,
        "days_left": int(days),
    }


def etcd_host(version: str = "3.5.30", **overrides) -> dict:
    """A reachable etcd member in good shape, with ``overrides`` replacing whole facts."""
    facts = {
        "groups": ["etcd", "nyc3"],
        "components": ["etcd"],
        "error": None,
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64"},
        "flannel": None,
        "certificates": {"/etc/etcd/pki/member.crt": cert("etcd-1", 29)},
        "units": {
            "etcd": {
                "load": "loaded",
                "active": "active",
                "sub": "running",
                "since": NOW - timedelta(days=3),
                "restarts": 0,
            }
        },
        "versions": {"etcd": {"installed": [version], "current": version, "running": version}},
        "etcd": {
            "healthy": True,
            "error": None,
            "member_id": "a1",
            "leader": "a1",
            "is_leader": False,
            "db_size": 20480,
            "raft_term": 4,
            "version": version,
        },
    }
    return facts | overrides


def healthy_fleet() -> dict[str, dict]:
    worker = {
        "groups": ["nyc3", "workers"],
        "error": None,
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64"},
        "flannel": {"subnet": "10.244.3.1/24"},
        "certificates": {},
    }
    return {"etcd-1": etcd_host(), "etcd-2": etcd_host(), "worker-1": worker}


def table(report, title):
    (found,) = [t for t in report.tables if t.title == title]
    return found


def flagged(report, title) -> list[tuple[str, ...]]:
    found = table(report, title)
    return [row for index, row in enumerate(found.rows) if index in found.flagged]


def test_a_healthy_fleet_has_a_row_per_host_and_no_problems():
    report = analyse(healthy_fleet(), days=14, now=NOW)
    assert report.problems == []
    assert [row[0] for row in table(report, "hosts").rows] == ["etcd-1", "etcd-2", "worker-1"]
    assert table(report, "hosts").rows[2][4] == "10.244.3.1/24"
    assert [row[:2] for row in table(report, "versions").rows] == [
        ("etcd-1", "etcd"),
        ("etcd-2", "etcd"),
    ]
    assert table(report, "etcd").rows[0][4] == "20 KiB"
    assert render(report, color=False).endswith("no problems")


def test_certificates_expiring_within_the_window_are_flagged():
    fleet = healthy_fleet()
    fleet["etcd-2"]["certificates"] = {"/etc/etcd/pki/member.crt": cert("etcd-2", 1 / 24)}
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "etcd-2: certificates: /etc/etcd/pki/member.crt (etcd-2) expires in 1h00m"
    ]
    assert [row[:2] for row in flagged(report, "certificates")] == [
        ("etcd-2", "/etc/etcd/pki/member.crt")
    ]
    # A 29-day certificate is fine with the default window but not with a 30-day one.
    wider = [str(p) for p in analyse(fleet, days=30, now=NOW).problems]
    assert wider[0] == "etcd-1: certificates: /etc/etcd/pki/member.crt (etcd-1) expires in 29d"
    assert len(wider) == 2


def test_by_default_a_certificate_is_flagged_once_its_renewal_missed_half_its_window():
    # Renewed with a third of its lifetime left: flagged with less than a sixth (a 48 h client
    # identity at 8 h, a 30-day certificate at 5 days), whatever its lifetime.
    fleet = healthy_fleet()
    fleet["etcd-1"]["certificates"] = {
        "/etc/etcd/pki/healthcheck-client.crt": cert("etcd-healthcheck-client", 9 / 24, 2),
        "/etc/etcd/pki/member.crt": cert("etcd-1", 6),
    }
    fleet["etcd-2"]["certificates"] = {
        "/etc/etcd/pki/healthcheck-client.crt": cert("etcd-healthcheck-client", 7 / 24, 2),
        "/etc/etcd/pki/member.crt": cert("etcd-2", 4),
    }
    report = analyse(fleet, now=NOW)
    assert [str(p) for p in report.problems] == [
        "etcd-2: certificates: /etc/etcd/pki/healthcheck-client.crt (etcd-healthcheck-client) "
        "expires in 7h00m",
        "etcd-2: certificates: /etc/etcd/pki/member.crt (etcd-2) expires in 4d",
    ]
    assert json.loads(as_json(fleet, report, None))["days"] is None
    # --days asks for a window of its own instead.
    assert len(analyse(fleet, days=5, now=NOW).problems) == 3


def test_version_skew_flags_the_odd_member_out():
    fleet = healthy_fleet()
    fleet["etcd-3"] = etcd_host("3.5.29")
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "fleet: versions: etcd version skew: 3.5.30 on etcd-1, etcd-2; 3.5.29 on etcd-3"
    ]
    assert [row[0] for row in flagged(report, "versions")] == ["etcd-3"]


def test_a_process_still_running_an_old_version_is_a_pending_restart():
    fleet = healthy_fleet()
    fleet["etcd-1"]["versions"]["etcd"] = {
        "installed": ["3.5.29", "3.5.30"],
        "current": "3.5.30",
        "running": "3.5.29",
    }
    problems = [str(p) for p in analyse(fleet, days=14, now=NOW).problems]
    assert "etcd-1: versions: etcd runs 3.5.29 but 3.5.30 is current (restart pending)" in problems


@pytest.mark.parametrize(
    ("active", "sub", "seconds", "problem"),
    [
        ("deactivating", "stop-sigterm", 2, False),  # a renewal's restart, caught mid-way
        ("activating", "start", 5, False),
        ("deactivating", "stop-sigterm", 45, True),  # stuck stopping
        ("activating", "start", 120, True),  # e.g. etcd waiting for peers it cannot reach
        ("activating", "auto-restart", 2, True),  # crashed, waiting to be started again
    ],
)
def test_a_unit_mid_restart_is_shown_but_only_a_stuck_one_is_a_problem(
    active, sub, seconds, problem
):
    fleet = healthy_fleet()
    changed = NOW - timedelta(seconds=seconds)
    fleet["etcd-2"]["units"]["etcd"] |= {"active": active, "sub": sub, "changed": changed}
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == (
        [f"etcd-2: units: etcd: loaded, {active}"] if problem else []
    )
    (row,) = [row for row in table(report, "units").rows if row[0] == "etcd-2"]
    assert row[3] == f"{active}/{sub}"


def test_failed_units_and_unhealthy_members_are_problems():
    fleet = healthy_fleet()
    fleet["etcd-2"]["units"]["etcd"] |= {"active": "failed", "sub": "failed"}
    fleet["etcd-2"]["etcd"] = {"healthy": False, "error": "connection refused"}
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "etcd-2: units: etcd: loaded, failed",
        "etcd-2: etcd: unhealthy: connection refused",
    ]
    assert [row[0] for row in flagged(report, "units")] == ["etcd-2"]
    assert [row[2] for row in flagged(report, "etcd")] == ["UNHEALTHY"]


def test_members_disagreeing_on_the_leader_is_a_problem():
    fleet = healthy_fleet()
    fleet["etcd-2"]["etcd"] = fleet["etcd-2"]["etcd"] | {"leader": "b2"}
    problems = [str(p) for p in analyse(fleet, days=14, now=NOW).problems]
    assert problems == ["fleet: etcd: members disagree on the leader: a1 by etcd-1; b2 by etcd-2"]


def test_a_component_not_deployed_yet_is_not_reported():
    fleet = healthy_fleet()
    fleet["etcd-2"]["units"] = {"etcd": {"load": "not-found", "active": "inactive"}}
    fleet["etcd-2"]["versions"] = {"etcd": {"installed": [], "current": None, "running": None}}
    fleet["etcd-2"]["etcd"] = None
    report = analyse(fleet, days=14, now=NOW)
    assert report.problems == []
    assert [row[0] for row in table(report, "units").rows] == ["etcd-1"]


def test_unreachable_hosts_are_listed_and_flagged():
    fleet = healthy_fleet()
    fleet["worker-1"] = {"groups": ["workers"], "error": "Could not connect (timed out)"}
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "worker-1: hosts: unreachable: Could not connect (timed out)"
    ]
    text = render(report, color=False)
    assert "! worker-1" in text and "1 problem(s):" in text
    assert "\033[" not in text
    assert "\033[31m! worker-1" in render(report, color=True)


def test_json_carries_the_facts_and_the_problems():
    fleet = healthy_fleet()
    fleet["worker-1"] = {"groups": ["workers"], "error": "timed out"}
    document = json.loads(as_json(fleet, analyse(fleet, days=7, now=NOW), days=7))
    assert document["days"] == 7
    assert document["problems"] == [
        {"host": "worker-1", "concern": "hosts", "message": "unreachable: timed out"}
    ]
    not_after = document["hosts"]["etcd-1"]["certificates"]["/etc/etcd/pki/member.crt"]
    assert not_after["not_after"] == "2026-05-30T12:00:00+00:00"


def _kube_host(groups: list[str], releases: dict[str, str]) -> dict:
    return {
        "groups": groups,
        "components": list(releases),  # each release here is its component's
        "error": None,
        "units": {},
        "versions": {
            release: {"installed": [version], "current": version, "running": version}
            for release, version in releases.items()
        },
    }


def test_every_component_of_a_worker_is_reported_and_a_kubelet_newer_than_the_api_flagged():
    fleet = {
        "cp-1": _kube_host(["control_plane"], {"kube-apiserver": "1.33.5"}),
        "worker-1": _kube_host(["workers"], {"kubelet": "1.34.1", "kube-proxy": "1.33.5"}),
        "worker-2": _kube_host(["workers"], {"kubelet": "1.33.5", "kube-proxy": "1.33.5"}),
        "worker-3": _kube_host(["workers"], {"kubelet": "1.33.5", "kube-proxy": "1.33.5"}),
    }
    report = analyse(fleet, days=14, now=NOW)
    assert "worker-1: versions: kubelet 1.34.1 would be newer than the apiserver cp-1 (1.33.5)" in [
        str(p) for p in report.problems
    ]
    assert ("worker-1", "kubelet", "1.34.1", "1.34.1", "1.34.1") in flagged(report, "versions")
    assert not any(row[0] == "worker-2" for row in flagged(report, "versions"))


def test_a_host_whose_facts_failed_is_flagged_and_the_rest_reported():
    fleet = healthy_fleet()
    fleet["etcd-2"] = etcd_host(fact_errors={"certificates": "ValueError: bad line"})
    del fleet["etcd-2"]["certificates"]
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "etcd-2: hosts: facts failed: certificates: ValueError: bad line"
    ]
    assert flagged(report, "hosts")[0][:2] == ("etcd-2", "etcd,nyc3")
    assert flagged(report, "hosts")[0][-1] == "FACTS FAILED: certificates"
    assert len(table(report, "versions").rows) == 2  # etcd-2's other facts still count


STATS_CSV = [
    "# pxname,svname,qcur,status,check_status,addr",
    "kube-apiserver,FRONTEND,,OPEN,,",
    "apiservers,lab-cp-1,0,UP,L7OK,198.18.0.13:6443",
    "apiservers,lab-cp-2,0,DOWN,* L4CON,198.18.0.14:6443",
    "apiservers,BACKEND,0,UP,,",
    "stats,FRONTEND,,OPEN,,",
]


def test_a_proxy_that_sees_an_apiserver_down_is_flagged():
    seen = ApiProxyBackends().process(STATS_CSV)
    assert seen == {
        "lab-cp-1": {"address": "198.18.0.13:6443", "status": "UP", "check": "L7OK"},
        "lab-cp-2": {"address": "198.18.0.14:6443", "status": "DOWN", "check": "L4CON"},
    }
    fleet = healthy_fleet()
    fleet["worker-1"]["api_proxy"] = seen
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == [
        "worker-1: api proxies: sees apiserver lab-cp-2 DOWN"
    ]
    assert flagged(report, "api proxies") == [
        ("worker-1", "lab-cp-2", "198.18.0.14:6443", "DOWN", "L4CON")
    ]
    assert ApiProxyBackends().process([]) is None  # no proxy answering


def api_node(
    ready: str = "True",
    pressure: str = "",
    renewed: timedelta = timedelta(seconds=3),
    changed: timedelta = timedelta(days=3),
):
    """A Node and its Lease as the API returns them (only the fields the report reads): Ready
    ``changed`` ago, the Lease ``renewed`` ago."""
    stamp = (NOW - renewed).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    since = (NOW - changed).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": kind, "status": "True" if kind == pressure else "False"}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": ready,
            "reason": "KubeletNotReady" if ready != "True" else "KubeletReady",
            "message": "PLEG is not healthy" if ready != "True" else "kubelet is posting ready",
            "lastTransitionTime": since,
        }
    )
    node = {"metadata": {"name": "worker-1"}, "spec": {}, "status": {"conditions": conditions}}
    lease = {"spec": {"renewTime": stamp, "leaseDurationSeconds": 40}}
    return node, lease


@pytest.mark.parametrize(
    ("node", "problem"),
    [
        (node_health(*api_node()), None),
        (node_health(*api_node(renewed=timedelta(seconds=39))), None),
        (
            node_health(*api_node(ready="Unknown")),
            "not Ready (Unknown: PLEG is not healthy)",
        ),
        (
            node_health(*api_node(renewed=timedelta(seconds=61))),
            "no heartbeat for 61s (lease 40s)",
        ),
        (node_health(*api_node(pressure="DiskPressure")), "DiskPressure"),
        # NotReady for seconds while heartbeating: a kubelet just restarted, settling.
        (node_health(*api_node(ready="False", changed=timedelta(seconds=5))), None),
        (
            node_health(*api_node(ready="False", changed=timedelta(seconds=31))),
            "not Ready (False: PLEG is not healthy)",
        ),
        (
            node_health(
                *api_node(
                    ready="False", changed=timedelta(seconds=5), renewed=timedelta(seconds=50)
                )
            ),
            "not Ready (False: PLEG is not healthy)",
        ),
        (node_health(None, None), "no Node object (its kubelet never registered)"),
        ({"error": "no apiserver answered"}, "not read: no apiserver answered"),
    ],
)
def test_a_workers_node_is_read_from_the_api_and_flagged_unless_ready_and_heartbeating(
    node, problem
):
    fleet = healthy_fleet()
    fleet["worker-1"]["node"] = node
    report = analyse(fleet, days=14, now=NOW)
    assert [str(p) for p in report.problems] == ([f"worker-1: node: {problem}"] if problem else [])
    assert [row[0] for row in table(report, "nodes").rows] == ["worker-1"]
    assert [row[0] for row in flagged(report, "nodes")] == (["worker-1"] if problem else [])


def test_a_cordoned_node_is_shown_but_is_no_problem():
    node, lease = api_node()
    node["spec"]["unschedulable"] = True
    fleet = healthy_fleet()
    fleet["worker-1"]["node"] = node_health(node, lease)
    report = analyse(fleet, days=14, now=NOW)
    assert report.problems == []
    assert table(report, "nodes").rows == [("worker-1", "True", "3s ago", "-", "yes")]
