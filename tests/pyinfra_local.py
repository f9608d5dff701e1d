"""A deploy run through the real pyinfra CLI on this machine (@local), for tests of operations
that write files: the user and group running it, and how many operations changed."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path


def run_local(directory: Path, source: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Write ``source`` as ``directory``/deploy.py and run ``pyinfra @local`` on it."""
    deploy = directory / "deploy.py"
    deploy.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", str(deploy), *flags],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def me() -> tuple[str, str]:
    """The user and group running the tests."""
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def changed(stdout: str) -> int:
    """How many operations changed something, from the output of a ``--json`` run."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("{")]
    operations = json.loads(line)["results"]["operations"]
    return sum(len(op["success"]) for op in operations if op.get("success"))
