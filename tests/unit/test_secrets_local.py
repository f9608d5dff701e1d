"""secret_file through the real pyinfra CLI (@local): the content is written exactly, 0600,
and no output ever shows it: not --dry --diff, not -y --diff, not -vvv."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "encryption-key-c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ="


def _run(tmp_path: Path, secret: str, *flags: str) -> subprocess.CompletedProcess[str]:
    deploy = tmp_path / "deploy.py"
    target = tmp_path / "secret.yaml"
    deploy.write_text(
        "from galley.host.secrets import Secret, secret_file\n"
        f"secret_file(name='secret', path={str(target)!r}, secret=Secret({secret!r}), "
        f"user={_me()!r}, group={_my_group()!r})\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", str(deploy), *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _my_group() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


def _changed(result: subprocess.CompletedProcess[str]) -> int:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return len(json.loads(line)["results"]["operations"][0]["success"])


@pytest.mark.parametrize("flags", [("--dry", "--diff"), ("-y", "--diff", "-vvv")])
def test_a_secret_is_never_printed(tmp_path, flags):
    (tmp_path / "secret.yaml").write_text("old-" + SECRET[::-1])
    result = _run(tmp_path, SECRET, *flags)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert SECRET not in output and SECRET[::-1] not in output
    assert "secret" in output  # the operation itself is listed


def test_written_exactly_0600_and_a_second_run_changes_nothing(tmp_path):
    first = _run(tmp_path, SECRET, "-y", "--json")
    assert first.returncode == 0, first.stderr
    target = tmp_path / "secret.yaml"
    assert target.read_text() == SECRET
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not (tmp_path / "secret.yaml.galley-new").exists()
    assert _changed(first) == 1
    assert _changed(_run(tmp_path, SECRET, "-y", "--json")) == 0
    target.chmod(0o644)
    assert _changed(_run(tmp_path, SECRET, "-y", "--json")) == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
