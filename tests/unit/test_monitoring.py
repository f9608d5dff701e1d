"""The monitoring component's files: targets from the inventory, and a Prometheus and an
Alertmanager configuration that the real ``promtool`` and ``amtool`` accept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from galley.components import scrape_jobs_of
from galley.components.monitoring import (
    ALERTMANAGER_CONFIG,
    CONFIG,
    RULES,
    alertmanager_config,
    prometheus_duration,
    prometheus_files,
    target_file,
)
from galley.inventory.validate import inventory_problems
from tests.group_data import GROUP_DATA

HOSTS = {
    "etcd": {"lab-etcd-1": "198.18.0.10", "lab-etcd-2": "198.18.0.11"},
    "control_plane": {"lab-cp-1": "198.18.0.13"},
    "workers": {"lab-worker-1": "198.18.0.15", "lab-worker-2": "198.18.0.16"},
    "monitoring": {"lab-mon-1": "198.18.0.17"},
}


def _inventory(**data) -> Inventory:
    hosts = [
        (name, {"private_ip": address})
        for group in HOSTS.values()
        for name, address in group.items()
    ]
    shared = GROUP_DATA | {"cluster_name": "lab"} | data
    return Inventory(
        (hosts, shared), **{group: (list(names), {}) for group, names in HOSTS.items()}
    )


def _files(inventory: Inventory) -> dict[str, str]:
    """The monitoring host's Prometheus files: path -> text."""
    host = inventory.get_host("lab-mon-1")
    return prometheus_files(host, scrape_jobs_of(host))


def _targets(files: dict[str, str], job: str) -> dict[str, str]:
    """host -> address of one job's target file."""
    return {
        entry["labels"]["host"]: address
        for entry in json.loads(files[target_file(job)])
        for address in entry["targets"]
    }


def test_every_host_is_a_target_of_the_jobs_it_runs():
    files = _files(_inventory())
    every = {name: f"{address}:9100" for group in HOSTS.values() for name, address in group.items()}
    assert _targets(files, "node") == every
    assert _targets(files, "etcd") == {
        "lab-etcd-1": "198.18.0.10:2381",
        "lab-etcd-2": "198.18.0.11:2381",
    }
    assert _targets(files, "api-proxy") == {
        "lab-worker-1": "198.18.0.15:8405",
        "lab-worker-2": "198.18.0.16:8405",
    }
    assert _targets(files, "apiserver") == {"lab-cp-1": "198.18.0.13:6443"}
    assert _targets(files, "controller-manager") == {"lab-cp-1": "198.18.0.13:10257"}
    assert _targets(files, "scheduler") == {"lab-cp-1": "198.18.0.13:10259"}
    assert _targets(files, "kubelet") == {
        "lab-worker-1": "198.18.0.15:10250",
        "lab-worker-2": "198.18.0.16:10250",
    }
    # Behind a load balancer the workers run no API proxy: nothing to scrape there.
    balanced = _files(_inventory(api_endpoint="api.lab.example"))
    assert _targets(balanced, "api-proxy") == {}


def test_prometheus_loads_the_configuration_and_rules(prometheus_release: Path, tmp_path):
    host = _inventory(monitoring_scrape_interval="1sec", monitoring_alert_after="5min")
    files = _files(host)
    assert "scrape_interval: 1s" in files[CONFIG.path]
    assert "for: &alert_after 5m" in files[RULES.path]
    # The files where the host has them, the etcd client's beside them (promtool reads them).
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text)
    config = files[CONFIG.path].replace("/etc/", f"{tmp_path}/etc/")
    (tmp_path / CONFIG.path.lstrip("/")).write_text(config)
    for name in (
        "etcd-ca.crt",
        "etcd-metrics.crt",
        "etcd-metrics.key",
        "kubernetes-ca.crt",
        "kube-metrics.crt",
        "kube-metrics.key",
    ):
        (tmp_path / "etc/galley/prometheus/pki" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "etc/galley/prometheus/pki" / name).write_text("")
    checked = subprocess.run(
        [prometheus_release / "promtool", "check", "config", tmp_path / CONFIG.path.lstrip("/")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout


@pytest.mark.parametrize(
    "receiver",
    [None, {"webhook_configs": [{"url": "https://alerts.example.com/hook"}]}],
)
def test_alertmanager_sends_every_alert_to_the_configured_receiver(
    alertmanager_release: Path, tmp_path, receiver
):
    config = alertmanager_config(_inventory(alertmanager_receiver=receiver).get_host("lab-mon-1"))
    path = tmp_path / Path(ALERTMANAGER_CONFIG.path).name
    path.write_text(config)
    checked = subprocess.run(
        [alertmanager_release / "amtool", "check-config", path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 receivers" in checked.stdout
    if receiver:
        assert "https://alerts.example.com/hook" in config


def test_bad_monitoring_settings_are_refused_before_any_change():
    inventory = _inventory(monitoring_alert_after="soon", alertmanager_receiver="ops@example.com")
    fields = {problem.field for problem in inventory_problems(inventory)}
    assert {"monitoring_alert_after", "alertmanager_receiver"} <= fields


def test_systemd_spans_become_prometheus_durations():
    assert [prometheus_duration(s) for s in ("30s", "15min", "2h", "7d", "10sec", "45")] == [
        "30s",
        "15m",
        "2h",
        "7d",
        "10s",
        "45s",
    ]
