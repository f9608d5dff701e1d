"""secret_file through the real pyinfra CLI (@local): the content is written exactly, 0600,
and no output ever shows it: not --dry --diff, not -y --diff, not -vvv."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.pyinfra_local import changed, me, run_local

SECRET = "encryption-key-c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ="


def _run(tmp_path: Path, secret: str, *flags: str) -> subprocess.CompletedProcess[str]:
    user, group = me()
    target = tmp_path / "secret.yaml"
    return run_local(
        tmp_path,
        "from galley.host.secrets import Secret, secret_file\n"
        f"secret_file(name='secret', path={str(target)!r}, secret=Secret({secret!r}), "
        f"user={user!r}, group={group!r})\n",
        *flags,
    )


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
    assert changed(first.stdout) == 1
    assert changed(_run(tmp_path, SECRET, "-y", "--json").stdout) == 0
    target.chmod(0o644)
    assert changed(_run(tmp_path, SECRET, "-y", "--json").stdout) == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
