"""Monitoring on the lab: the real Prometheus on lab-mon-1 scrapes every host's node exporter
(with galley's host state), every etcd member's metrics (TLS, with its own identity), every
worker's API proxy and the Kubernetes components' own metrics (an identity RBAC lets read
metrics only); an alert fires while its cause lasts, reaches Alertmanager, and
clears when it is gone."""

from __future__ import annotations

import requests

from galley.components.monitoring import ALERTMANAGER_PORT, PKI_DIR
from tests.etcd_writer import Writer

from .conftest import (
    CRASH_ETCD,
    alerts,
    endpoints,
    hosts_of,
    prometheus,
    scrape_targets,
    ssh,
    ssh_run,
    wait_for,
)


def _monitoring_host(cluster) -> tuple[str, str]:
    (droplet,) = [d for d in cluster.droplets if "monitoring" in d.roles]
    return droplet.name, droplet.address


def test_every_host_and_exporter_is_scraped_with_galleys_host_state(cluster, inventory):
    expected = {("node", d.name) for d in cluster.droplets}
    expected |= {("etcd", name) for name in hosts_of(cluster, "etcd")}
    for job in ("api-proxy", "kubelet"):
        expected |= {(job, name) for name in hosts_of(cluster, "workers")}
    for job in ("apiserver", "controller-manager", "scheduler"):
        expected |= {(job, name) for name in hosts_of(cluster, "control_plane")}
    expected |= {("prometheus", ""), ("alertmanager", "")}

    def all_up() -> bool:
        targets = scrape_targets(cluster)
        return set(targets) == expected and set(targets.values()) == {"up"}

    assert wait_for(all_up, 30), scrape_targets(cluster)

    # What each host runs, as its deploy installed it, read from its textfile metrics (the
    # series of a host an earlier test removed go stale a scrape interval or two later).
    def releases() -> set[tuple[str, str, str]]:
        found = prometheus(cluster, "query?query=galley_release_info")["result"]
        return {
            (r["metric"]["host"], r["metric"]["release"], r["metric"]["version"]) for r in found
        }

    hosts = {d.name for d in cluster.droplets}
    assert wait_for(lambda: {host for host, _, _ in releases()} == hosts, 20), releases()
    etcd_version = inventory.get_host("lab-etcd-1").data.etcd_version
    assert ("lab-etcd-1", "etcd", etcd_version) in releases()

    # The controller manager holding the lease counts the Nodes not Ready: none, once Nodes
    # re-registered by earlier tests are Ready again.
    def unready() -> list[str]:
        query = "query?query=node_collector_unhealthy_nodes_in_zone"
        return [sample["value"][1] for sample in prometheus(cluster, query)["result"]]

    assert wait_for(lambda: unready() == ["0"], 60), unready()


def test_etcd_metrics_need_a_client_certificate_of_the_etcd_ca(cluster):
    monitoring, _ = _monitoring_host(cluster)
    member = next(d.address for d in cluster.droplets if "etcd" in d.roles)
    curl = f"curl -sS --max-time 5 --cacert {PKI_DIR}/etcd-ca.crt https://{member}:2381/metrics"
    identity = f"--cert {PKI_DIR}/etcd-metrics.crt --key {PKI_DIR}/etcd-metrics.key"
    assert "etcd_server_has_leader 1" in ssh(monitoring, f"{curl} {identity}")
    refused = ssh_run(monitoring, curl)
    assert refused.returncode != 0 and "etcd_server" not in refused.stdout


def test_the_kubernetes_metrics_identity_reads_metrics_and_nothing_else(cluster):
    monitoring, _ = _monitoring_host(cluster)
    apiserver = next(d.address for d in cluster.droplets if "control_plane" in d.roles)
    curl = (
        "curl -s -o /dev/null -w '%{http_code}' --max-time 5"
        f" --cacert {PKI_DIR}/kubernetes-ca.crt"
        f" --cert {PKI_DIR}/kube-metrics.crt --key {PKI_DIR}/kube-metrics.key"
    )
    assert ssh(monitoring, f"{curl} https://{apiserver}:6443/metrics") == "200"
    for path in (
        "api/v1/secrets",
        "api/v1/nodes",
        "apis/rbac.authorization.k8s.io/v1/clusterroles",
    ):
        assert ssh(monitoring, f"{curl} https://{apiserver}:6443/{path}") == "403", path


def test_a_crashed_etcd_member_alerts_until_it_is_back_and_no_write_fails(
    cluster, client_cert, etcd_writer
):
    member = hosts_of(cluster, "etcd")[-1]
    _, address = _monitoring_host(cluster)

    def in_alertmanager() -> bool:
        listed = requests.get(f"http://{address}:{ALERTMANAGER_PORT}/api/v2/alerts", timeout=5)
        return any(
            a["labels"]["alertname"] == "EtcdMemberDown" and a["labels"]["host"] == member
            for a in listed.json()
        )

    writer = Writer(endpoints(cluster), client_cert, etcd_writer)
    writer.start()
    try:
        ssh(member, CRASH_ETCD)
        try:
            assert alerts(cluster, "EtcdMemberDown") == {}
            assert wait_for(lambda: alerts(cluster, "EtcdMemberDown") == {member: "firing"}, 45)
            assert wait_for(in_alertmanager, 15)
        finally:
            ssh(member, "systemctl start etcd")
        assert wait_for(lambda: alerts(cluster, "EtcdMemberDown") == {}, 45)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.ok > 100 and writer.failed == [], writer.failed
