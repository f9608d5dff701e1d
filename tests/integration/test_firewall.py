"""The host firewall on the lab: real connection attempts from every droplet, from this
machine (the operator) and from an address outside the inventory to every port of every
droplet match the matrix; applying it to a running cluster loses no etcd write and no node;
rules that would cut SSH are rolled back by the host itself and the run names it."""

from __future__ import annotations

import inspect
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from galley.lab.topology import BRIDGE
from galley.ops.kubeapi import KubeApi, node_ready
from tests.etcd_writer import Writer

from .conftest import (
    PROBE,
    admin_files,
    changed,
    endpoints,
    lab_inventory_variant,
    run_cli,
    run_deploy,
    ssh,
    ssh_run,
)

# The matrix, written here by hand (not read from galley's declarations): for each
# group a droplet is in, each TCP port and the sources that may connect. "operator" is this
# machine; the lab also lets it write to etcd (the test suite's writer loop).
MATRIX: dict[str, dict[int, set[str]]] = {
    "etcd": {2379: {"etcd", "control_plane", "operator"}, 2380: {"etcd"}, 2381: {"monitoring"}},
    "control_plane": {
        6443: {"workers", "control_plane", "monitoring", "operator"},
        10257: {"monitoring"},  # the controller manager's and the scheduler's metrics
        10259: {"monitoring"},
    },
    # 10256: load balancers only; 8405: the API proxy's metrics.
    "workers": {10250: {"control_plane", "monitoring"}, 10256: set(), 8405: {"monitoring"}},
    "monitoring": {9090: {"operator"}, 9093: {"operator"}},
}
# Every host: SSH, and its node exporter for the monitoring hosts.
SSH = {22: {"operator"}, 9100: {"monitoring"}}
UNUSED = {7777: set()}  # nothing declared: dropped for everyone
PORTS = sorted({*SSH, *UNUSED, *(port for ports in MATRIX.values() for port in ports)})
# An address on the bridge that is in no inventory: another tenant's droplet in the VPC.
FOREIGN = "198.18.0.250"
OPERATOR = "198.18.0.1"


def _allowed(droplet, source_groups: set[str]) -> set[int]:
    """The ports of ``droplet`` the matrix opens to a source in ``source_groups``."""
    wanted = {**SSH, **UNUSED}
    for group in droplet.roles:
        wanted.update(MATRIX[group])
    return {port for port, sources in wanted.items() if sources & source_groups}


def _reaches_from_droplet(name: str, targets: list[str]) -> dict[tuple[str, int], bool]:
    """Which ``targets`` ports droplet ``name`` can open a TCP connection to (connected or
    refused: the firewall let it through; no answer in 2 s: dropped)."""
    script = " ".join(
        f"({PROBE.format(address=address, port=port)}) &" for address in targets for port in PORTS
    )
    found = {}
    for line in ssh(name, f"{script} wait").splitlines():
        address, port, code = line.split()
        found[(address, int(port))] = code in ("0", "1")
    return found


def _reaches_from_here(source: str, address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.bind((source, 0))
        probe.settimeout(2)
        try:
            probe.connect((address, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return True


@pytest.fixture
def foreign_address() -> Iterator[str]:
    """`FOREIGN` on the lab's bridge, on this machine, for the test."""
    subprocess.run(["ip", "addr", "add", f"{FOREIGN}/32", "dev", BRIDGE], check=True)
    try:
        yield FOREIGN
    finally:
        subprocess.run(["ip", "addr", "del", f"{FOREIGN}/32", "dev", BRIDGE], check=True)


def test_connections_from_everywhere_match_the_matrix(cluster, foreign_address):
    droplets = cluster.droplets
    addresses = [d.address for d in droplets]
    with ThreadPoolExecutor(len(droplets)) as pool:
        seen = dict(
            zip(
                [d.name for d in droplets],
                pool.map(lambda d: _reaches_from_droplet(d.name, addresses), droplets),
                strict=True,
            )
        )
    pairs = [(d.address, port) for d in droplets for port in PORTS]
    for source in (OPERATOR, foreign_address):
        with ThreadPoolExecutor(len(pairs)) as pool:
            answers = pool.map(lambda pair, source=source: _reaches_from_here(source, *pair), pairs)
            seen[source] = dict(zip(pairs, answers, strict=True))
    groups_of = {d.name: set(d.roles) for d in droplets}
    wrong = []
    for source, reached in seen.items():
        source_groups = groups_of.get(source, {"operator"} if source == OPERATOR else set())
        for target in droplets:
            if target.name == source:
                continue  # a droplet reaching itself goes over loopback
            allowed = _allowed(target, source_groups)
            for port in PORTS:
                if reached[(target.address, port)] != (port in allowed):
                    wrong.append((source, target.name, port, reached[(target.address, port)]))
    assert wrong == [], wrong


def udp_probe(target: str, source: str = "") -> str:
    """Send a UDP datagram to ``target`` (address:port) where nothing listens: the kernel
    answers "port unreachable" ("refused") where the firewall lets it in; where it drops it,
    nothing comes back ("silent"). Runs here and, as its source, on the droplets."""
    import socket

    address, port = target.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2)
        udp.bind((source, 0))
        try:
            udp.connect((address, int(port)))
            udp.send(b"galley")
            udp.recv(1)
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "silent"
        return "answered"


# The probe as a script for a droplet's python3: every target given, at once.
UDP_SCRIPT = (
    inspect.getsource(udp_probe)
    + "import sys\nfrom concurrent.futures import ThreadPoolExecutor\n"
    + "with ThreadPoolExecutor(len(sys.argv) - 1) as pool:\n"
    + "    for target, answer in zip(sys.argv[1:], pool.map(udp_probe, sys.argv[1:])):\n"
    + "        print(target, answer)\n"
)


def _udp_closed(droplet) -> tuple[int, ...]:
    """UDP ports nothing listens on: 7777 everywhere, flannel's 8472 off the workers (on a
    worker the kernel's VXLAN socket takes it and never answers: pods talking across workers
    prove that one open, `test_kubernetes.py`)."""
    return (7777,) if "workers" in droplet.roles else (7777, 8472)


def test_udp_where_nothing_is_declared_is_dropped_for_everyone(cluster, foreign_address):
    """A droplet's own probe (over loopback, accepted) is refused: the probe sees a port
    answer. From every other droplet, this machine and the foreign address: silence."""
    targets = {f"{d.address}:{port}": d.name for d in cluster.droplets for port in _udp_closed(d)}
    command = f"python3 -c {shlex.quote(UDP_SCRIPT)} {' '.join(targets)}"
    names = [d.name for d in cluster.droplets]
    with ThreadPoolExecutor(len(names)) as pool:
        outputs = pool.map(lambda name: ssh(name, command), names)
        seen = {
            (name, line.split()[0]): line.split()[1]
            for name, lines in zip(names, outputs, strict=True)
            for line in lines.splitlines()
        }
    for source in (OPERATOR, foreign_address):
        with ThreadPoolExecutor(len(targets)) as pool:
            answers = pool.map(lambda target, source=source: udp_probe(target, source), targets)
            seen.update(
                ((source, target), answer) for target, answer in zip(targets, answers, strict=True)
            )
    expected = {
        (source, target): "refused" if targets[target] == source else "silent"
        for source, target in seen
    }
    assert {key: answer for key, answer in seen.items() if expected[key] != answer} == {}


def _remove_firewalls(cluster) -> None:
    for droplet in cluster.droplets:
        ssh(droplet.name, "nft delete table inet galley; rm -f /etc/galley/firewall/kept.*")


def test_a_first_application_loses_no_etcd_write_and_no_node(cluster, client_cert, etcd_writer):
    _remove_firewalls(cluster)
    writer = Writer(endpoints(cluster), client_cert, etcd_writer)
    writer.start()
    try:
        code, results, output = run_deploy("cluster")
        assert code == 0, output
        time.sleep(2)  # the writes right after the last rules went in
    finally:
        writer.stop.set()
        writer.join()
    assert writer.ok > 20 and writer.failed == [], writer.failed
    applied = changed(results)["host-firewall | firewall rules applied (a rollback armed)"]
    assert applied == {d.name for d in cluster.droplets}
    api = KubeApi(
        [f"https://{d.address}:6443" for d in cluster.droplets if "control_plane" in d.roles],
        admin_files(),
    )
    assert all(node_ready(node) for node in api.nodes())
    report = run_cli("galley", "report", "inventories/lab.py", check=False)
    assert report.returncode == 0, report.stdout
    code, results, output = run_deploy("cluster")
    assert code == 0 and changed(results) == {}, output


def test_rules_that_cut_ssh_are_rolled_back_by_the_host_and_the_run_names_it(cluster, tmp_path):
    kept = "sha256sum /etc/galley/firewall/kept.nft; nft list table inet galley | sha256sum"
    before = ssh("lab-worker-2", kept)
    variant = lab_inventory_variant(
        tmp_path,
        "for name, data in workers:\n"
        "    if name == 'lab-worker-2':\n"
        "        data['firewall_operator_cidrs'] = ['203.0.113.0/24']\n"
        "        data['firewall_rollback_seconds'] = 5\n",
    )
    started = time.monotonic()
    code, _, output = run_deploy(
        "cluster", "--limit", "lab-worker-2", inventory=variant, check=False
    )
    assert code != 0
    assert (
        "lab-worker-2: the new firewall rules cut new SSH connections from this machine to "
        "198.18.0.16:22; it rolled back to its previous rules (check firewall_operator_cidrs)"
    ) in output, output
    assert time.monotonic() - started < 60
    assert ssh_run("lab-worker-2", "true").returncode == 0  # a new connection gets in again
    assert ssh("lab-worker-2", kept) == before
    # The next deploy of the inventory's rules puts back only the rules file the failed run
    # left (kept and live rules are the inventory's already).
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    assert changed(results) == {
        "host-firewall | firewall rules /etc/galley/firewall/rules.nft": {"lab-worker-2"}
    }
