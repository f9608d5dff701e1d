"""The shipped alert rules under Prometheus' own ``promtool``: each alert fires, with its
labels and annotations, on the series a failing host exports, and stays quiet before its
``for`` has passed and on a healthy host."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from galley.components.monitoring import alert_rules
from galley.facts.api_proxy import BACKEND as PROXY_BACKEND

RULES = alert_rules("2m")
RUNBOOKS = {
    rule["alert"]: rule["annotations"]["runbook"]
    for group in yaml.safe_load(RULES)["groups"]
    for rule in group["rules"]
}
DAY = 86400
CERT = "/etc/etcd/pki/member.crt"
QUOTA = 2 * 1024**3  # etcd's default --quota-backend-bytes


def _target(job: str, address: str, host: str, groups: str) -> dict[str, str]:
    return {"instance": address, "job": job, "host": host, "groups": groups}


ETCD_1 = _target("node", "198.18.0.10:9100", "lab-etcd-1", "etcd")
ETCD_2 = _target("node", "198.18.0.11:9100", "lab-etcd-2", "etcd")
MEMBER_1 = _target("etcd", "198.18.0.10:2381", "lab-etcd-1", "etcd")
MEMBER_2 = _target("etcd", "198.18.0.11:2381", "lab-etcd-2", "etcd")
WORKER_1 = _target("node", "198.18.0.20:9100", "lab-worker-1", "workers")
PROXY_1 = _target("api-proxy", "198.18.0.20:8405", "lab-worker-1", "workers")
APISERVER_1 = _target("apiserver", "198.18.0.13:6443", "lab-cp-1", "control_plane")
APISERVER_2 = _target("apiserver", "198.18.0.14:6443", "lab-cp-2", "control_plane")
SCHEDULER_1 = _target("scheduler", "198.18.0.13:10259", "lab-cp-1", "control_plane")
MANAGER_1 = _target("controller-manager", "198.18.0.13:10257", "lab-cp-1", "control_plane")
KUBELET_1 = _target("kubelet", "198.18.0.20:10250", "lab-worker-1", "workers")
KUBELET_2 = _target("kubelet", "198.18.0.21:10250", "lab-worker-2", "workers")


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def _quiet(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _fires(
    alert: str, at: str, labels: dict[str, str], severity: str, summary: str
) -> dict[str, Any]:
    annotations = {"summary": summary, "runbook": RUNBOOKS[alert]}
    expected = {"exp_labels": {**labels, "severity": severity}, "exp_annotations": annotations}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}


def _scenario(name: str, series: list[dict[str, str]], *cases: dict[str, Any]) -> dict[str, Any]:
    """One promtool test group: a sample a minute, promtool's clock starting at 0. A series
    that turns bad at 1m is still pending at 2m and fires at 3m (``for: 2m``)."""
    return {"name": name, "interval": "1m", "input_series": series, "alert_rule_test": list(cases)}


HOURLY = " ".join(f"{hour * 3600}x59" for hour in range(4))  # an hourly snapshot, 4 hours
CERT_1, CERT_2 = {**ETCD_1, "certificate": CERT}, {**ETCD_2, "certificate": CERT}
# HAProxy labels a server with its backend (haproxy.cfg's "backend apiservers").
BACKEND = {"proxy": PROXY_BACKEND, "server": "lab-cp-1"}
OTHER_BACKEND = {"proxy": PROXY_BACKEND, "server": "lab-cp-2"}

SCENARIOS = [
    _scenario(
        "a host stops answering",
        [_series("up", ETCD_1, "1 0x10"), _series("up", WORKER_1, "1x11")],
        _quiet("HostDown", "2m"),
        _fires(
            "HostDown", "3m", ETCD_1, "critical", "lab-etcd-1: its node exporter does not answer"
        ),
    ),
    _scenario(
        "certificate renewal fails",
        [
            _series("galley_cert_renewal_failing", ETCD_1, "0 1x10"),
            _series("galley_cert_renewal_failing", ETCD_2, "0x11"),
        ],
        # At once: the script retried before it recorded the failure.
        _quiet("CertificateRenewalFailing", "0m"),
        _fires(
            "CertificateRenewalFailing",
            "1m",
            ETCD_1,
            "warning",
            "lab-etcd-1: certificate renewal failing",
        ),
    ),
    _scenario(
        # At 0 lab-etcd-1's certificate (30 days, 10 left) is due; lab-etcd-2's was renewed.
        "a due certificate is not renewed",
        [
            _series("galley_cert_renewal_period_seconds", ETCD_1, "3600x130"),
            _series("galley_cert_renewal_period_seconds", ETCD_2, "3600x130"),
            _series("galley_certificate_renew_at_timestamp_seconds", CERT_1, "0x130"),
            _series("galley_certificate_not_after_timestamp_seconds", CERT_1, f"{10 * DAY}x130"),
            _series("galley_certificate_renew_at_timestamp_seconds", CERT_2, f"{20 * DAY}x130"),
            _series("galley_certificate_not_after_timestamp_seconds", CERT_2, f"{30 * DAY}x130"),
        ],
        _quiet("CertificateNotRenewed", "2h"),
        _fires(
            "CertificateNotRenewed",
            "2h1m",
            CERT_1,
            "warning",
            f"lab-etcd-1: {CERT} is in the last third of its life",
        ),
        _quiet("CertificateNearExpiry", "2h1m"),
    ),
    _scenario(
        # 30-day certificates: lab-etcd-1's has 5 days and an hour left at 0, lab-etcd-2's 20.
        "a certificate enters the last sixth of its life",
        [
            _series(
                "galley_certificate_not_before_timestamp_seconds", CERT_1, f"{-25 * DAY + 3600}x70"
            ),
            _series(
                "galley_certificate_not_after_timestamp_seconds", CERT_1, f"{5 * DAY + 3600}x70"
            ),
            _series("galley_certificate_not_before_timestamp_seconds", CERT_2, f"{-10 * DAY}x70"),
            _series("galley_certificate_not_after_timestamp_seconds", CERT_2, f"{20 * DAY}x70"),
        ],
        _quiet("CertificateNearExpiry", "1h"),
        _fires(
            "CertificateNearExpiry",
            "1h1m",
            CERT_1,
            "critical",
            f"lab-etcd-1: {CERT} has less than a sixth of its life left",
        ),
    ),
    _scenario(
        "an etcd member stops answering",
        [_series("up", MEMBER_1, "1 0x10"), _series("up", MEMBER_2, "1x11")],
        _quiet("EtcdMemberDown", "2m"),
        _fires(
            "EtcdMemberDown", "3m", MEMBER_1, "critical", "lab-etcd-1: etcd member does not answer"
        ),
    ),
    _scenario(
        "an etcd member loses its leader",
        [
            _series("etcd_server_has_leader", MEMBER_1, "1 0x10"),
            _series("etcd_server_has_leader", MEMBER_2, "1x11"),
        ],
        _quiet("EtcdNoLeader", "2m"),
        _fires("EtcdNoLeader", "3m", MEMBER_1, "critical", "lab-etcd-1: etcd member has no leader"),
    ),
    _scenario(
        "an etcd database grows past 80% of its quota",
        [
            _series("etcd_server_quota_backend_bytes", MEMBER_1, f"{QUOTA}x11"),
            _series("etcd_server_quota_backend_bytes", MEMBER_2, f"{QUOTA}x11"),
            _series(
                "etcd_mvcc_db_total_size_in_bytes", MEMBER_1, f"{QUOTA // 2} {QUOTA * 85 // 100}x10"
            ),
            # Just under 80%: quiet.
            _series("etcd_mvcc_db_total_size_in_bytes", MEMBER_2, f"{QUOTA * 80 // 100}x11"),
        ],
        _quiet("EtcdDatabaseNearQuota", "2m"),
        _fires(
            "EtcdDatabaseNearQuota",
            "3m",
            MEMBER_1,
            "warning",
            "lab-etcd-1: etcd database over 80% of its quota",
        ),
    ),
    _scenario(
        # Hourly snapshots: lab-etcd-1's last one is from 0, lab-etcd-2 keeps saving them.
        "etcd snapshots stop",
        [
            _series("galley_etcd_snapshot_interval_seconds", ETCD_1, "3600x239"),
            _series("galley_etcd_snapshot_interval_seconds", ETCD_2, "3600x239"),
            _series("galley_etcd_snapshot_last_success_timestamp_seconds", ETCD_1, "0x239"),
            _series("galley_etcd_snapshot_last_success_timestamp_seconds", ETCD_2, HOURLY),
        ],
        _quiet("EtcdSnapshotStale", "2h"),
        _fires(
            "EtcdSnapshotStale",
            "2h1m",
            ETCD_1,
            "warning",
            "lab-etcd-1: no etcd snapshot for two intervals",
        ),
    ),
    _scenario(
        # HAProxy's exporter has one series per state, 1 for the state the server is in.
        "an apiserver behind the API proxy goes down",
        [
            _series("haproxy_server_status", {**BACKEND, "state": "UP", **PROXY_1}, "1 0x10"),
            _series("haproxy_server_status", {**BACKEND, "state": "DOWN", **PROXY_1}, "0 1x10"),
            _series("haproxy_server_status", {**OTHER_BACKEND, "state": "UP", **PROXY_1}, "1x11"),
            _series("haproxy_server_status", {**OTHER_BACKEND, "state": "DOWN", **PROXY_1}, "0x11"),
        ],
        _quiet("ApiProxyBackendDown", "2m"),
        _fires(
            "ApiProxyBackendDown",
            "3m",
            {**BACKEND, "state": "DOWN", **PROXY_1},
            "warning",
            "lab-worker-1: its API proxy sees apiserver lab-cp-1 down",
        ),
    ),
    _scenario(
        "a worker's API proxy stops answering",
        [_series("up", PROXY_1, "1 0x10"), _series("up", WORKER_1, "1x11")],
        _quiet("ApiProxyDown", "2m"),
        _fires(
            "ApiProxyDown", "3m", PROXY_1, "critical", "lab-worker-1: its API proxy does not answer"
        ),
        _quiet("HostDown", "3m"),
    ),
    _scenario(
        "an apiserver stops answering",
        [_series("up", APISERVER_1, "1 0x10"), _series("up", APISERVER_2, "1x11")],
        _quiet("ApiserverDown", "2m"),
        _fires(
            "ApiserverDown",
            "3m",
            APISERVER_1,
            "critical",
            "lab-cp-1: kube-apiserver does not answer",
        ),
    ),
    _scenario(
        "a scheduler stops answering, the controller manager beside it does not",
        [_series("up", SCHEDULER_1, "1 0x10"), _series("up", MANAGER_1, "1x11")],
        _quiet("ControlPlaneComponentDown", "2m"),
        _fires(
            "ControlPlaneComponentDown",
            "3m",
            SCHEDULER_1,
            "warning",
            "lab-cp-1: kube-scheduler does not answer",
        ),
    ),
    _scenario(
        "a kubelet stops answering",
        [_series("up", KUBELET_1, "1 0x10"), _series("up", KUBELET_2, "1x11")],
        _quiet("KubeletDown", "2m"),
        _fires("KubeletDown", "3m", KUBELET_1, "critical", "lab-worker-1: kubelet does not answer"),
    ),
    _scenario(
        # Only the controller manager holding the lease counts; the other exports nothing.
        "a node goes NotReady",
        [
            _series("node_collector_unhealthy_nodes_in_zone", {**MANAGER_1, "zone": ""}, "0 1x10"),
        ],
        _quiet("NodesNotReady", "2m"),
        {
            "eval_time": "3m",
            "alertname": "NodesNotReady",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "critical"},  # an empty zone is no label
                    "exp_annotations": {
                        "summary": "1 Node(s) not Ready",
                        "runbook": RUNBOOKS["NodesNotReady"],
                    },
                }
            ],
        },
    ),
]


@pytest.fixture(scope="session")
def promtool(prometheus_release: Path) -> Path:
    """promtool of the lab mirror's Prometheus release (Debian's build)."""
    return prometheus_release / "promtool"


def _promtool(promtool: Path, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _alert_names(rules: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\w+)$", rules, re.MULTILINE)


def test_promtool_accepts_the_rules(promtool: Path, tmp_path: Path) -> None:
    """Prometheus loads the shipped rules: every alert, none lost to a YAML mistake."""
    (tmp_path / "alerts.yml").write_text(RULES)
    out = _promtool(promtool, tmp_path, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(_alert_names(RULES))} rules found" in out


def test_each_alert_fires_on_its_failure_and_not_before(promtool: Path, tmp_path: Path) -> None:
    """Each alert fires with its labels and annotations once its condition has held long
    enough, and stays quiet before that and for the healthy hosts beside it."""
    (tmp_path / "alerts.yml").write_text(RULES)
    tests = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": SCENARIOS}
    (tmp_path / "alerts_test.yml").write_text(json.dumps(tests, indent=2))  # JSON is YAML
    _promtool(promtool, tmp_path, "test", "rules", "alerts_test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """An alert added to the rules without a promtool case here fails the suite."""
    cases = [case for scenario in SCENARIOS for case in scenario["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    names = _alert_names(RULES)
    assert names and len(names) == len(set(names)) == len(RUNBOOKS)
    assert firing == set(names)
    assert quiet == set(names)


def test_rules_wait_the_configured_duration(promtool: Path, tmp_path: Path) -> None:
    """monitoring_alert_after sets how long every held condition waits before it fires."""
    rules = alert_rules("10s")
    assert "for: &alert_after 10s" in rules
    held = [rule for group in yaml.safe_load(rules)["groups"] for rule in group["rules"]]
    assert {rule["for"] for rule in held if "for" in rule} == {"10s"}
    (tmp_path / "alerts.yml").write_text(rules)
    _promtool(promtool, tmp_path, "check", "rules", "alerts.yml")
