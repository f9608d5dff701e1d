"""galley.facts.system: fact commands run by sh with a systemctl stand-in (systemd 252 output
shapes) on PATH and the real stat, uname and /etc/os-release."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from galley.facts.system import OsInfo, PendingRestart, UnitStates

ETCD_RUNNING = """MainPID=4242
NRestarts=2
UnitFileState=enabled
LoadState=loaded
ActiveState=active
SubState=running
ActiveEnterTimestamp=Thu 2025-05-01 10:00:00.250000 UTC
StateChangeTimestamp=Thu 2025-05-01 10:00:01 UTC"""
NOT_FOUND = """MainPID=0
NRestarts=0
UnitFileState=
LoadState=not-found
ActiveState=inactive
SubState=dead
ActiveEnterTimestamp=n/a"""
ETCD_FAILED = """MainPID=0
NRestarts=5
LoadState=loaded
ActiveState=failed
SubState=failed
ActiveEnterTimestamp=Thu 2025-05-01 10:00:00.250000 UTC"""
# ETCD_RUNNING's ActiveEnterTimestamp as seconds since the epoch.
STARTED = datetime(2025, 5, 1, 10, 0, 0, 250000, tzinfo=UTC).timestamp()

# Prints the canned `systemctl show` output and records its arguments, one per line.
STAND_IN = """#!/bin/sh
dir=$(dirname "$0")
printf '%s\\n' "$@" > "$dir/argv"
cat "$dir/show.out"
"""


@pytest.fixture
def systemctl(tmp_path):
    """Install a systemctl stand-in; call it with the output `systemctl show` should print."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(STAND_IN)
    (bin_dir / "systemctl").chmod(0o755)

    def answer(output: str) -> Path:
        (bin_dir / "show.out").write_text(output + "\n")
        return bin_dir

    return answer


def gather(fact, bin_dir: Path | None = None, **arguments):
    """Run the fact's command with sh (stand-ins first on PATH), process it as pyinfra does."""
    env = dict(os.environ)
    if bin_dir:
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
    done = subprocess.run(
        ["sh", "-c", str(fact.command(**arguments))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


def test_unit_states_maps_each_unit_and_marks_missing_ones(systemctl):
    bin_dir = systemctl(f"{ETCD_RUNNING}\n\n{NOT_FOUND}")
    states = gather(UnitStates(), bin_dir, units=["etcd", "srv-data\\x2d1.mount"])
    assert states == {
        "etcd": {
            "load": "loaded",
            "active": "active",
            "sub": "running",
            "since": datetime(2025, 5, 1, 10, 0, 0, 250000, tzinfo=UTC),
            "changed": datetime(2025, 5, 1, 10, 0, 1, tzinfo=UTC),
            "main_pid": 4242,
            "restarts": 2,
            "enabled": True,
        },
        "srv-data\\x2d1.mount": {
            "load": "not-found",
            "active": "inactive",
            "sub": "dead",
            "since": None,
            "changed": None,
            "main_pid": None,
            "restarts": 0,
            "enabled": False,
        },
    }
    argv = (bin_dir / "argv").read_text().splitlines()
    assert argv == [
        "show",
        "--timestamp=us+utc",
        "-p",
        "LoadState,ActiveState,SubState,ActiveEnterTimestamp,StateChangeTimestamp,MainPID,"
        "NRestarts,UnitFileState",
        "--",
        "etcd",
        "srv-data\\x2d1.mount",
    ]


@pytest.mark.parametrize("unset", ["ActiveEnterTimestamp=", "ActiveEnterTimestamp=n/a", ""])
def test_never_started_unit_has_no_since(unset):
    lines = ["##galley-units etcd", "LoadState=loaded", "ActiveState=inactive", unset]
    assert UnitStates().process(lines)["etcd"]["since"] is None


def test_unit_names_are_validated_before_reaching_the_shell():
    with pytest.raises(ValueError, match="invalid systemd unit name"):
        UnitStates().command(units=["etcd; reboot"])


def _file(path: Path, mtime: float) -> Path:
    path.write_text("x")
    os.utime(path, (mtime, mtime))
    return path


def test_no_restart_pending_when_files_predate_the_start(systemctl, tmp_path):
    conf = _file(tmp_path / "etcd.conf.yml", STARTED - 60)
    missing = tmp_path / "not-written-yet"
    bin_dir = systemctl(ETCD_RUNNING)
    assert gather(PendingRestart(), bin_dir, unit="etcd", paths=[str(conf), str(missing)]) is False


def test_file_written_after_start_within_the_same_second_is_pending(systemctl, tmp_path):
    conf = _file(tmp_path / "etcd conf.yml", STARTED + 0.5)
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), unit="etcd", paths=[str(conf)])


def test_switching_a_symlink_to_an_older_target_is_pending(systemctl, tmp_path):
    old = _file(tmp_path / "3.5.29", STARTED - 3600)
    link = tmp_path / "current"
    link.symlink_to(old)
    os.utime(link, (STARTED + 5, STARTED + 5), follow_symlinks=False)
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), unit="etcd", paths=str(link))


def test_changing_a_symlinks_target_is_pending(systemctl, tmp_path):
    target = _file(tmp_path / "member.crt", STARTED + 5)
    link = tmp_path / "current.crt"
    link.symlink_to(target)
    os.utime(link, (STARTED - 5, STARTED - 5), follow_symlinks=False)
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), unit="etcd", paths=[str(link)])


@pytest.mark.parametrize("state", [ETCD_FAILED, NOT_FOUND])
def test_unit_not_running_is_pending(systemctl, tmp_path, state):
    conf = _file(tmp_path / "etcd.conf.yml", STARTED - 60)
    assert gather(PendingRestart(), systemctl(state), unit="etcd", paths=[str(conf)])


def test_pending_restart_without_paths_only_checks_the_unit(systemctl):
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), unit="etcd", paths=[]) is False


def test_os_info_on_this_machine():
    info = gather(OsInfo())
    assert info["kernel"] == platform.release()
    assert info["id"] == platform.freedesktop_os_release()["ID"]


def test_os_info_unquotes_debian_12_os_release():
    output = [
        "6.1.0-18-amd64",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
        'NAME="Debian GNU/Linux"',
        'VERSION_ID="12"',
        "VERSION_CODENAME=bookworm",
        "ID=debian",
    ]
    assert OsInfo().process(output) == {
        "id": "debian",
        "version_id": "12",
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-18-amd64",
    }


def test_a_reload_is_pending_until_the_stamp_is_newer_than_the_change(systemctl, tmp_path):
    conf = _file(tmp_path / "haproxy.cfg", STARTED + 30)
    stamp = tmp_path / "reloaded"
    arguments = {"unit": "etcd", "paths": [str(conf)], "stamp": str(stamp)}
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), **arguments)  # never reloaded
    _file(stamp, STARTED + 20)
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), **arguments)
    _file(stamp, STARTED + 40)
    assert gather(PendingRestart(), systemctl(ETCD_RUNNING), **arguments) is False
