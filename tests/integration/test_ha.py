"""Losing a control-plane host changes nothing for the workers: node-local API proxies (real
HAProxy from Debian) in front of every apiserver, or a load balancer named by `api_endpoint`.
Driven through the real CLIs (`galley lab`, `pyinfra`, `galley report`, kubectl)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from galley.components.kubernetes import K8S_DIR
from galley.components.monitoring import target_file
from galley.facts import ApiProxyBackends
from galley.lab.state import LabState
from galley.ops.kubeapi import NODE_LEASES, ApiError, KubeApi, node_ready

from .conftest import (
    FIREWALL_CHANGES,
    admin_files,
    bootstrap_vault,
    changed,
    hosts_of,
    lab_add,
    lab_inventory_variant,
    run_cli,
    run_deploy,
    ssh,
    steadily_ready,
    wait_for,
)

# A lab kubelet renews its Node Lease every 3 s (its heartbeat; `kubelet_node_lease_seconds`
# is 12): in this window each must renew it at least twice, through the apiserver left, and
# every Node stay Ready.
OUTAGE_SECONDS = 15
WORKER_UNITS = ("api-proxy", "containerd", "flanneld", "kubelet", "kube-proxy")
PROXY_CHANGES = {
    "flannel | /etc/galley/api-proxy/haproxy.cfg",
    "flannel | Reload api-proxy (only if its files changed)",
}
ENDPOINT = "api.lab.galley.test"


@pytest.fixture(scope="module")
def api(cluster) -> KubeApi:
    """The admin client, through every apiserver (one that is down is skipped)."""
    urls = [f"https://{d.address}:6443" for d in cluster.droplets if "control_plane" in d.roles]
    return KubeApi(urls, admin_files())


def _units(workers: list[str]) -> dict[str, str]:
    """Each worker's units' main PIDs and restart counts (a restart changes them)."""
    return {
        name: ssh(name, f"systemctl show -p MainPID -p NRestarts {' '.join(WORKER_UNITS)}")
        for name in workers
    }


def _report() -> tuple[int, dict]:
    result = run_cli("galley", "report", "inventories/lab.py", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def _proxies_see(workers: list[str], server: str) -> set[str]:
    """The status each worker's proxy gives ``server``, read as the report reads it (the
    `ApiProxyBackends` fact's command, over plain ssh: cheaper to poll than a report)."""
    fact = ApiProxyBackends()
    seen = (fact.process(ssh(name, fact.command()).splitlines()) or {} for name in workers)
    return {backends.get(server, {}).get("status") for backends in seen}


def _every_node_ready_while_heartbeating_twice(api: KubeApi, workers: list[str]) -> None:
    """Every Node Ready at every look until each kubelet has renewed its Lease twice, within
    `OUTAGE_SECONDS`."""
    renewals: dict[str, set[str]] = {name: set() for name in workers}
    deadline = time.monotonic() + OUTAGE_SECONDS
    # The first one seen may predate the outage: two more came through the other apiserver.
    while not all(len(seen) >= 3 for seen in renewals.values()):
        assert time.monotonic() < deadline, renewals
        nodes = {node["metadata"]["name"]: node for node in api.nodes()}
        assert all(node_ready(nodes[name]) for name in workers), {
            name: nodes.get(name, {}).get("status", {}).get("conditions") for name in workers
        }
        for name in workers:
            renewals[name].add(api.request("GET", f"{NODE_LEASES}/{name}")["spec"]["renewTime"])
        time.sleep(1)


@pytest.fixture
def workers(cluster) -> list[str]:
    return hosts_of(cluster, "workers")


def test_workers_reach_the_api_through_their_proxy_to_every_apiserver(workers):
    assert _proxies_see(workers, "lab-cp-1") == {"UP"}
    assert _proxies_see(workers, "lab-cp-2") == {"UP"}
    for name in workers:
        listening = ssh(name, "ss -Htlnp 'sport = :6443'")
        assert "127.0.0.1:6443" in listening and "haproxy" in listening, listening
        # Debian's own unit stays masked and never ran: galley's api-proxy is the only HAProxy.
        properties = "-p LoadState -p ActiveState -p ExecMainStartTimestampMonotonic"
        shown = ssh(name, f"systemctl show {properties} haproxy.service").split()
        assert dict(line.split("=", 1) for line in shown) == {
            "LoadState": "masked",
            "ActiveState": "inactive",
            "ExecMainStartTimestampMonotonic": "0",
        }, shown


def test_nodes_stay_ready_while_an_apiserver_is_stopped(api, workers, kubectl):
    assert steadily_ready(api, workers)
    before = _units(workers)
    ssh("lab-cp-1", "systemctl stop kube-apiserver")
    try:
        assert wait_for(lambda: _proxies_see(workers, "lab-cp-1") == {"DOWN"}, 20)
        code, document = _report()
        assert code == 1
        problems = {(p["host"], p["message"]) for p in document["problems"]}
        assert ("lab-cp-1", "kube-apiserver: loaded, inactive") in problems
        assert ("lab-worker-1", "sees apiserver lab-cp-1 DOWN") in problems
        _every_node_ready_while_heartbeating_twice(api, workers)
        # The operator's kubeconfig follows the apiserver that answers.
        written = run_cli("galley", "admin", "credentials", "inventories/lab.py").stdout
        assert "written" in written, written
        listed = subprocess.run(
            [str(kubectl), "--kubeconfig", str(admin_files().kubeconfig), "get", "nodes"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        for name in workers:
            assert any(
                line.split()[:2] == [name, "Ready"] for line in listed.stdout.splitlines()
            ), listed.stdout
    finally:
        ssh("lab-cp-1", "systemctl start kube-apiserver")
    assert wait_for(lambda: _proxies_see(workers, "lab-cp-1") == {"UP"}, 30)
    assert _units(workers) == before
    run_cli("galley", "admin", "credentials", "inventories/lab.py")
    assert "https://198.18.0.13:6443" in admin_files().kubeconfig.read_text()


def test_nodes_stay_ready_when_a_control_plane_droplet_dies(api, workers):
    assert steadily_ready(api, workers)
    before = _units(workers)
    run_cli("galley", "lab", "kill", "lab-cp-1")
    try:
        assert wait_for(lambda: _proxies_see(workers, "lab-cp-1") == {"DOWN"}, 20)
        code, document = _report()
        assert code == 1
        assert document["hosts"]["lab-cp-1"]["error"], document["hosts"]["lab-cp-1"]
        _every_node_ready_while_heartbeating_twice(api, workers)
    finally:
        run_cli("galley", "lab", "start", "lab-cp-1")
    assert wait_for(lambda: _proxies_see(workers, "lab-cp-1") == {"UP"}, 60)
    assert _units(workers) == before


def _changes_beside(results: dict, host: str) -> dict[str, set[str]]:
    """The changes a deploy made on hosts other than ``host``."""
    return {name: hosts - {host} for name, hosts in changed(results).items() if hosts - {host}}


@pytest.fixture
def third_control_plane_host(cluster) -> Iterator[str]:
    lab_add("control-plane")
    try:
        # A droplet new to the control plane waits for admission before any host is contacted.
        code, _, output = run_deploy("cluster", check=False)
        assert code != 0 and "lab-cp-3 (droplet id" in output, output
        run_cli("galley", "hostkeys", "accept", "inventories/lab.py", "lab-cp-3")
        yield "lab-cp-3"
    finally:
        if run_cli("galley", "lab", "remove", "lab-cp-3", check=False).returncode == 0:
            run_deploy("cluster")


def test_growing_and_shrinking_the_control_plane_reloads_the_proxies_only(
    third_control_plane_host, api, workers
):
    before = _units(workers)
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    # The workers' proxies reload; every cluster host's rules change (etcd, the API and the
    # kubelets are all reached from the control plane); the monitoring host gets a target.
    everyone = {d.name for d in LabState.load().droplets if "monitoring" not in d.roles} - {
        third_control_plane_host
    }
    expected = {name: set(workers) for name in PROXY_CHANGES}
    expected |= dict.fromkeys(FIREWALL_CHANGES, everyone)
    for job in ("node", "apiserver", "controller-manager", "scheduler"):
        expected[f"monitoring | {target_file(job)}"] = {"lab-mon-1"}
    changes = _changes_beside(results, third_control_plane_host)
    assert changes == expected, changes
    assert wait_for(lambda: _proxies_see(workers, third_control_plane_host) == {"UP"}, 30)
    assert KubeApi("https://198.18.0.18:6443", admin_files()).version()

    run_cli("galley", "lab", "remove", third_control_plane_host)
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    assert changed(results) == expected
    assert _proxies_see(workers, third_control_plane_host) == {None}
    assert _units(workers) == before
    assert all(node_ready(node) for node in api.nodes())


@pytest.fixture
def endpoint_inventory(cluster, tmp_path) -> Iterator[str]:
    """The lab with `api_endpoint` set to a name resolving to lab-cp-1 (standing in for a
    DigitalOcean load balancer); afterwards the default mode is deployed again."""
    inventory = lab_inventory_variant(
        tmp_path,
        "for _, data in etcd + control_plane + workers:\n"
        f"    data['api_endpoint'] = {ENDPOINT!r}\n",
    )
    clients = hosts_of(cluster, "control_plane") + hosts_of(cluster, "workers")
    for name in clients:
        ssh(name, f"echo '198.18.0.13 {ENDPOINT}' >> /etc/hosts")
    bootstrap_vault(inventory)
    try:
        yield inventory
    finally:
        bootstrap_vault()
        code, _, output = run_deploy("cluster")
        for name in clients:
            ssh(name, f"sed -i '/{ENDPOINT}/d' /etc/hosts")
        assert code == 0, output


def test_an_api_endpoint_replaces_the_proxies(endpoint_inventory, api, workers):
    code, results, output = run_deploy("cluster", inventory=endpoint_inventory)
    assert code == 0, output
    for name in workers:
        assert ssh(name, "systemctl is-active api-proxy", check=False).strip() == "inactive"
        assert ssh(name, "test -e /etc/systemd/system/api-proxy.service || echo gone") == "gone\n"
        servers = ssh(name, f"grep -h server: {K8S_DIR}/*.kubeconfig").split()
        assert set(servers) == {"server:", f"https://{ENDPOINT}:6443"}, servers
    san = ssh(
        "lab-cp-1", "openssl x509 -noout -ext subjectAltName -in /etc/kubernetes/pki/apiserver.crt"
    )
    assert f"DNS:{ENDPOINT}" in san
    code, results, output = run_deploy("cluster", inventory=endpoint_inventory)
    assert code == 0, output
    assert changed(results) == {}

    def ready() -> bool:
        try:
            return all(node_ready(node) for node in api.nodes())
        except ApiError:
            return False

    assert wait_for(ready, 30)
