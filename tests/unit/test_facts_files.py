"""galley.facts.files.FileDigests: its command run by sh on real files (one with a space in its
name, a directory, a missing path), parsed as a deploy reads it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from galley.facts.files import FileDigests


def _read(paths: list[str]) -> dict:
    fact = FileDigests()
    run = subprocess.run(
        ["sh", "-c", str(fact.command(paths=paths))], capture_output=True, text=True, check=True
    )
    return fact.process(run.stdout.splitlines())


def test_one_round_trip_reads_digest_mode_and_owner_of_each_path(tmp_path: Path):
    config = tmp_path / "a config.yaml"
    config.write_text("x: 1\n")
    config.chmod(0o640)
    missing = tmp_path / "missing"
    found = _read([str(config), str(tmp_path), str(missing)])
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    assert found == {
        str(config): {
            "sha256": hashlib.sha256(b"x: 1\n").hexdigest(),
            "mode": "640",
            "user": user,
            "group": group,
        },
        str(tmp_path): None,  # not a file: written again, as a missing one
        str(missing): None,
    }
    assert os.stat(config).st_mode & 0o777 == 0o640


def test_no_paths_reads_nothing():
    assert _read([]) == {}
