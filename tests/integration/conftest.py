"""Fixtures for integration tests: the real `galley` and `pyinfra` CLIs against lab droplets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hvac
import pytest

from galley.lab.state import LabState

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.lab)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="lab tests need root (systemd-nspawn, mounts, a bridge)")
        for item in items:
            item.add_marker(skip)


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None):
    """Run a console script of this virtualenv from the repository root."""
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- error lines\n{_error_lines(result.stdout + result.stderr)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _error_lines(output: str) -> str:
    """The lines of a long output that name an error, each with the line before it (pyinfra
    prints the failing operation's name there), so a failure far up the log still shows."""
    lines = output.splitlines()
    picked: list[str] = []
    for index, line in enumerate(lines):
        if "rror" in line and not line.lstrip().startswith("{"):
            picked.extend(lines[max(index - 1, 0) : index + 1])
    return "\n".join(picked[-60:])


def run_deploy(
    deploy_file: str, *args: str, inventory: str = "inventories/lab.py", check: bool = True
) -> tuple[int, dict | None, str]:
    """Run `pyinfra -y INVENTORY deploys/<file> --json`: exit code, JSON results, all output."""
    result = run_cli(
        "pyinfra", "-y", inventory, f"deploys/{deploy_file}.py", "--json", *args, check=check
    )
    try:
        results = json.loads(result.stdout)["results"]
    except (ValueError, KeyError):
        results = None
    return result.returncode, results, result.stdout + result.stderr


def changed(results: dict) -> dict[str, set[str]]:
    """Operation name -> hosts it changed, from `run_deploy`'s results."""
    return {op["name"]: set(op["success"]) for op in results["operations"] if op["success"]}


def lab_inventory_variant(directory: Path, body: str) -> str:
    """An inventory file: the lab's groups as `etcd`, `control_plane`, `workers`, then ``body``
    (Python that changes them); returns its path."""
    path = directory / "inventory.py"
    path.write_text(
        "from galley.lab.inventory import lab_groups, lab_overrides\n"
        "from galley.lab.state import LabState\n"
        "_state = LabState.load()\n"
        "_groups = lab_groups(_state, lab_overrides(_state))\n"
        "etcd = _groups['etcd']\n"
        "control_plane = _groups['control_plane']\n"
        "workers = _groups['workers']\n" + body
    )
    return str(path)


def lab_vault(state: LabState) -> hvac.Client:
    """A root client of the lab's OpenBao, its token read from the file the state names."""
    token = Path(state.vault_token_file).read_text().strip()
    return hvac.Client(url=state.vault_addr, token=token, verify=state.vault_ca_cert)


def pyinfra_json(*args: str) -> dict:
    """Run `pyinfra inventories/lab.py ... --json` and return its parsed output."""
    return json.loads(run_cli("pyinfra", "inventories/lab.py", *args, "--json").stdout)


@pytest.fixture(scope="session")
def lab() -> LabState:
    """A running default lab, brought up once for the session and taken down at its end."""
    was_up = LabState.load() is not None
    run_cli("galley", "lab", "up")
    state = LabState.load()
    assert state is not None
    yield state
    if not was_up:
        run_cli("galley", "lab", "down")


def kill_once_journal_says_done(args: list[str], journal: Path, key: str, timeout: float) -> dict:
    """Run ``galley ARGS``; SIGKILL it (the operator's session is lost) once the journal's
    record ``key`` is done, or at ``timeout``; the journal as it was left."""
    process = subprocess.Popen(
        [str(BIN / "galley"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists():
                nodes = json.loads(journal.read_text()).get("nodes", {})
                if nodes.get(key, {}).get("state") == "done":
                    break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    return json.loads(journal.read_text())
