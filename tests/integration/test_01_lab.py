"""The lab itself (runs first): bad input, up, facts through pyinfra, a stale lab booted anew.
The lab it leaves up serves the whole session, whose end takes it down and checks that nothing
is left (`lab_down_at_the_end` in conftest)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from galley.lab.lifecycle import all_running
from galley.lab.state import LAB_DIR, LabState

from .conftest import BIN, lab_leftovers, pyinfra_json, run_cli


@pytest.fixture(scope="module", autouse=True)
def no_lab_before():
    state = LabState.load()
    if state is not None and all_running(state):
        pytest.fail("a lab is already up: `galley lab down` before running the lab tests")
    if state is not None:  # left over from a machine restart: its processes are gone
        run_cli("galley", "lab", "down")


def _refused(*args: str, env: dict | None = None) -> str:
    result = run_cli("galley", "lab", "up", *args, check=False, env=env)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lab_leftovers() == []
    return lines[0]


def _vault_is_unsealed(state: LabState) -> bool:
    """Whether the lab's OpenBao answers as active (initialised, unsealed) over verified TLS."""
    health = requests.get(f"{state.vault_addr}/v1/sys/health", verify=state.vault_ca_cert)
    return health.status_code == 200


def test_invalid_counts_are_refused():
    assert _refused("--etcd", "-1") == "galley: error: --etcd must be a whole number >= 0, got -1"
    assert "need at least 3 control-plane droplets, got 1" in _refused(
        "--stacked-etcd", "--control-plane", "1"
    )


def test_missing_tools_are_named_with_their_package(tmp_path):
    message = _refused(env={"PATH": str(tmp_path)})
    assert "systemd-nspawn (apt-get install systemd-container)" in message
    assert "debootstrap (apt-get install debootstrap)" in message


def test_not_root_is_refused():
    setpriv = shutil.which("setpriv")
    result = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(BIN / "galley"),
            "lab",
            "up",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "galley: error: the lab needs root (systemd-nspawn, mounts and a bridge): run it as root"
    )
    assert lab_leftovers() == []


def test_taken_bridge_address_is_refused():
    subprocess.run(["ip", "link", "add", "galley-test0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.18.0.1/32", "dev", "galley-test0"], check=True)
        assert _refused() == (
            "galley: error: the lab's bridge address 198.18.0.1 is already taken by galley-test0"
        )
    finally:
        subprocess.run(["ip", "link", "delete", "galley-test0"], check=True)


def test_up_facts_and_a_stale_lab_booted_anew():
    up = run_cli("galley", "lab", "up")
    assert "lab up: 8 droplets running" in up.stdout
    state = LabState.load()
    assert [d.name for d in state.droplets] == [
        "lab-etcd-1",
        "lab-etcd-2",
        "lab-etcd-3",
        "lab-cp-1",
        "lab-cp-2",
        "lab-worker-1",
        "lab-worker-2",
        "lab-mon-1",
    ]

    assert state.vault_addr == "https://127.0.0.1:8200"
    assert _vault_is_unsealed(state)
    token = Path(state.vault_token_file).read_text().strip()
    assert Path(state.vault_token_file).stat().st_mode & 0o777 == 0o600
    assert token not in (LAB_DIR / "state.json").read_text()
    assert token not in up.stdout + up.stderr

    again = run_cli("galley", "lab", "up")
    assert "already up (8 droplets)" in again.stdout
    assert LabState.load() == state

    facts = pyinfra_json("fact", "server.Os", "server.Hostname", "server.LinuxDistribution")
    names = {d.name for d in state.droplets}
    assert set(facts["server.Hostname"]) == names
    for name in names:
        assert facts["server.Os"][name] == "Linux"
        assert facts["server.Hostname"][name] == name
        distro = facts["server.LinuxDistribution"][name]
        assert (distro["name"], distro["major"]) == ("Debian", 12)

    # Droplets reach nothing beyond the bridge (no default route), but Debian's archive
    # through the host's apt proxy.
    droplet = state.droplets[-1].name
    routes = run_cli("galley", "lab", "ssh", droplet, "ip", "route").stdout
    assert "default" not in routes
    apt = run_cli("galley", "lab", "ssh", droplet, "apt-get", "update", timeout=120)
    assert "198.18.0.1" not in apt.stderr and "Err:" not in apt.stdout

    status = run_cli("galley", "lab", "status").stdout.splitlines()
    assert sum("running" in line for line in status) == 8 + 4  # and 4 services

    # A lab whose processes died (e.g. the machine restarted) is cleaned up and booted anew.
    for service in ("mirror", "vault"):
        os.kill(state.services[service], signal.SIGKILL)
    renewed = run_cli("galley", "lab", "up")
    assert "the recorded lab is stale" in renewed.stdout
    assert "lab up: 8 droplets running" in renewed.stdout
    assert all_running(LabState.load())
    assert _vault_is_unsealed(LabState.load())
