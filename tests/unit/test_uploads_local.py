"""keep_file through the real pyinfra CLI (@local), after the host was read as a converge
reads it: a new file lands whole with its mode (private from the start), a second run changes
nothing, a mode change only sets the mode, ``--diff`` shows the change, the same content
planned twice in a run is written once."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.pyinfra_local import changed, me, run_local


def _run(tmp_path: Path, text: str, mode: str, *flags: str, twice: bool = False) -> str:
    target = _target(tmp_path)
    target.parent.mkdir(exist_ok=True)
    owner, group = me()
    second = (
        f"assert keep_file('again', {str(target)!r}, {text!r}, {owner!r}, {group!r}, {mode!r})"
        " is first\n"
        if twice
        else ""
    )
    result = run_local(
        tmp_path,
        "from galley.host.observed import Wanted, observe\n"
        "from galley.host.uploads import keep_file\n"
        "wanted = Wanted()\n"
        f"wanted.files([{str(target)!r}])\n"
        "observe(wanted)\n"
        f"first = keep_file('app.conf', {str(target)!r}, {text!r}, {owner!r}, {group!r}, "
        f"{mode!r})\n" + second,
        *flags,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _target(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "app.conf"


def test_a_new_private_file_lands_whole_and_a_second_run_changes_nothing(tmp_path):
    assert changed(_run(tmp_path, "token: one\n", "600", "-y", "--json")) == 1
    target = _target(tmp_path)
    assert target.read_text() == "token: one\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["app.conf"]  # no temporary left
    assert changed(_run(tmp_path, "token: one\n", "600", "-y", "--json")) == 0


def test_a_mode_change_keeps_the_content_and_its_time(tmp_path):
    _run(tmp_path, "a: 1\n", "644", "-y")
    target = _target(tmp_path)
    before = target.stat().st_mtime_ns
    assert changed(_run(tmp_path, "a: 1\n", "640", "-y", "--json")) == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_mtime_ns == before  # not rewritten: nothing restarts for it


@pytest.mark.parametrize("flags", [("--dry", "--diff"), ("-y", "--diff")])
def test_diff_shows_the_change(tmp_path, flags):
    _run(tmp_path, "replicas: 1\n", "644", "-y")
    output = _run(tmp_path, "replicas: 2\n", "644", *flags)
    assert "- replicas: 1" in output and "+ replicas: 2" in output
    expected = "replicas: 1\n" if "--dry" in flags else "replicas: 2\n"
    assert _target(tmp_path).read_text() == expected


def test_the_same_content_planned_twice_in_a_run_is_written_once(tmp_path):
    output = _run(tmp_path, "b: 2\n", "644", "-y", "--json", twice=True)
    assert changed(output) == 1
    assert _target(tmp_path).read_text() == "b: 2\n"
