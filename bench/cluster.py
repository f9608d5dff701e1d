"""Seconds of a full-cluster converge and of a no-op re-run on a fresh default lab.

Targets on a 2-core machine: converge < 60 s, no-op < 5 s. Takes the lab down and brings a
fresh default one up (root), so run it only when nobody else uses the lab:
`/opt/galley-venv/bin/python bench/cluster.py`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str) -> float:
    """Run a console script of this virtualenv from the repository root; return its seconds."""
    start = time.monotonic()
    subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def main() -> None:
    run("galley", "lab", "down")
    lab_up = run("galley", "lab", "up")
    run("galley", "vault", "bootstrap", "--cluster", "lab")
    deploy = ("pyinfra", "-y", "inventories/lab.py", "deploys/cluster.py")
    converge = run(*deploy)
    noop = sorted(run(*deploy) for _ in range(3))[1]
    print(f"lab up (warm cache):         {lab_up:6.1f} s")
    print(f"cluster converge from empty: {converge:6.1f} s   (target < 60 s)")
    print(f"cluster no-op re-run median: {noop:6.1f} s   (target < 5 s)")


if __name__ == "__main__":
    main()
