"""Bad input through the real CLIs: one clear line each, the documented exit code, no
traceback, and for pyinfra no connection attempted (the hosts are loopback addresses where a
listener counts every connection; nothing outside 127.0.0.0/8 is ever dialled)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# One port per pytest-xdist worker: two workers may run these tests at once.
PORT = 2222 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


@pytest.fixture
def listener() -> Iterator[list[str]]:
    """A TCP listener on 127.0.3.1-3 port 2222: the list of peers that connected."""
    accepted: list[str] = []
    sockets = []
    for last in (1, 2, 3):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((f"127.0.3.{last}", PORT))
        sock.listen(8)
        sock.settimeout(0.2)
        sockets.append(sock)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            for sock in sockets:
                try:
                    conn, peer = sock.accept()
                except (TimeoutError, OSError):
                    continue
                accepted.append(f"{peer[0]}:{peer[1]}")
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield accepted
    stop.set()
    thread.join()
    for sock in sockets:
        sock.close()


def _host(name: str, last: int, **data) -> str:
    values = {"ssh_hostname": f"127.0.3.{last}", "ssh_port": PORT, "private_ip": f"127.0.3.{last}"}
    return repr((name, {**values, **data}))


def _inventory(tmp_path: Path, etcd: list[str], data: str = "", workers: tuple = ()) -> Path:
    path = tmp_path / "inventory.py"
    path.write_text(
        "from galley.inventory.validate import checked\n"
        f"_groups = checked({{'etcd': [{', '.join(etcd)}], 'control_plane': [], "
        f"'workers': [{', '.join(workers)}]}}, __file__)\n"
        "etcd = _groups['etcd']\ncontrol_plane = _groups['control_plane']\n"
        f"workers = _groups['workers']\n{data}"
    )
    (tmp_path / "group_data").mkdir(exist_ok=True)
    (tmp_path / "group_data" / "all.py").write_text("cluster_name = 'lab'\n")
    return path


GOOD = [_host("lab-etcd-1", 1), _host("lab-etcd-2", 2), _host("lab-etcd-3", 3)]
BAD_INVENTORIES = {
    "typo'd address": (
        [_host("lab-etcd-1", 1), _host("lab-etcd-2", 2, private_ip="127.0.3.256"), GOOD[2]],
        "lab-etcd-2: private_ip: '127.0.3.256' is not an IP address",
    ),
    "not an RFC 1123 label": (
        [_host("lab_Etcd_1", 1), *GOOD[1:]],
        "lab_Etcd_1: name: not an RFC 1123 label",
    ),
    "duplicate address": (
        [GOOD[0], _host("lab-etcd-2", 2, private_ip="127.0.3.1"), GOOD[2]],
        "lab-etcd-2: private_ip: 127.0.3.1 is also used by lab-etcd-1",
    ),
    "even etcd group": (GOOD[:2], "inventory: etcd: 2 members: an even number adds no"),
    "outside the naming scheme": (
        [_host("etcd-1", 1), *GOOD[1:]],
        "etcd-1: name: does not fit the cluster's naming scheme lab-*",
    ),
    "certificate lifetime that is not a duration": (
        [_host("lab-etcd-1", 1, etcd_cert_ttl="a month"), *GOOD[1:]],
        "lab-etcd-1: etcd_cert_ttl: 'a month' is not a duration such as '720h'",
    ),
    "port of the wrong type": (
        [_host("lab-etcd-1", 1, etcd_client_port="2379"), *GOOD[1:]],
        "lab-etcd-1: etcd_client_port: must be a TCP port, not '2379'",
    ),
    # A component's setting, checked from its declaration on the hosts that run it.
    "registry mirror that is not a URL": (
        (GOOD, _host("lab-worker-1", 4, registry_mirror="mirror:5000/path")),
        "lab-worker-1: registry_mirror: 'mirror:5000/path' is not a registry URL such as "
        "https://mirror:5000",
    ),
    "a yes/no setting given as text": (
        (GOOD, _host("lab-worker-1", 4, containerd_restrict_oom_score_adj="yes")),
        "lab-worker-1: containerd_restrict_oom_score_adj: 'yes' is not True or False",
    ),
    "a negative conntrack size": (
        (GOOD, _host("lab-worker-1", 4, kube_proxy_conntrack_max_per_core=-1)),
        "lab-worker-1: kube_proxy_conntrack_max_per_core: -1 is not a count (0 or more)",
    ),
    "a kubelet lease of no time": (
        (GOOD, _host("lab-worker-1", 4, kubelet_node_lease_seconds=0)),
        "lab-worker-1: kubelet_node_lease_seconds: 0 is not a count of at least 1",
    ),
    "a snapshot count of none": (
        [_host("lab-etcd-1", 1, etcd_snapshot_keep=0), *GOOD[1:]],
        "lab-etcd-1: etcd_snapshot_keep: 0 is not a count of at least 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INVENTORIES))
def test_pyinfra_refuses_a_bad_inventory_before_connecting(case, tmp_path, listener):
    hosts, message = BAD_INVENTORIES[case]
    etcd, worker = hosts if isinstance(hosts, tuple) else (hosts, None)
    inventory = _inventory(tmp_path, etcd, workers=(worker,) if worker else ())
    run = subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(inventory), str(REPO / "deploys" / "etcd.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "galley: the inventory is not valid, no host was contacted:" in output
    assert message in output
    assert "Traceback" not in output and "Connecting" not in output
    assert listener == []


def test_a_good_inventory_does_get_connected(tmp_path, listener):
    """The listener would see pyinfra's connection: the refusals above are not vacuous."""
    inventory = _inventory(tmp_path, GOOD)
    subprocess.run(
        [str(BIN / "pyinfra"), "-y", str(inventory), str(REPO / "deploys" / "etcd.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": str(BIN), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert listener != []


COMMANDS = {
    "validate": ["validate", "{inventory}"],
    "report": ["report", "{inventory}"],
    "hostkeys": ["hostkeys", "list", "{inventory}"],
    "rollout": ["rollout", "kubelet", "--to", "1.33.6", "{inventory}"],
    "admin": ["admin", "credentials", "{inventory}"],
    "checksums": ["checksums", "fetch", "etcd", "3.5.30", "--inventory", "{inventory}"],
    "lock": ["lock", "break", "{inventory}"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reports_an_inventory_that_raises_in_one_line(command, tmp_path):
    inventory = tmp_path / "broken.py"
    inventory.write_text("etcd = [undefined_name]\n")
    args = [arg.format(inventory=inventory) for arg in COMMANDS[command]]
    run = subprocess.run(
        [str(BIN / "galley"), *args], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert f"cannot load {inventory}: NameError: name 'undefined_name' is not defined" in lines[0]


def test_etcd_snapshot_names_every_member_it_cannot_reach(tmp_path):
    """Nothing listens on port 2299 of 127.0.3.1-3: one line naming each member, exit 1."""
    inventory = _inventory(tmp_path, [_host(f"lab-etcd-{i}", i, ssh_port=2299) for i in (1, 2, 3)])
    run = subprocess.run(
        [str(BIN / "galley"), "etcd", "snapshot", str(inventory), "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": str(BIN), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("galley:")]
    assert line.startswith("galley: etcd snapshot: cannot reach every host (lab-etcd-1: ")
    assert "port 2299 on 127.0.3.2" in line and "lab-etcd-3: " in line
    assert not (tmp_path / "out").exists() and "Traceback" not in run.stderr
