"""Seconds of a first deploy and of a no-op re-run on a fresh default lab.

`python bench/deploy.py etcd` (targets on a 2-core machine: first < 30 s, no-op < 5 s) or
`python bench/deploy.py cluster` (converge < 60 s, no-op < 5 s). Also prints `lab up` and
`galley vault bootstrap` against the lab's OpenBao. Takes the lab down and brings
a fresh default one up (root), so run it only when nobody else uses the lab.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {"etcd": (30, 5), "cluster": (60, 5)}  # seconds: first deploy, no-op re-run


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deploy", choices=sorted(TARGETS))
    name = parser.parse_args().deploy
    first_target, noop_target = TARGETS[name]
    run("galley", "lab", "down")
    lab_up = run("galley", "lab", "up")
    bootstrap = run(
        "galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", "inventories/lab.py"
    )
    deploy = ("pyinfra", "-y", "inventories/lab.py", f"deploys/{name}.py")
    first = run(*deploy)
    noop = sorted(run(*deploy) for _ in range(3))[1]
    rows = [
        ("lab up (warm cache, OpenBao)", lab_up, None),
        ("galley vault bootstrap", bootstrap, None),
        (f"{name} first deploy", first, first_target),
        (f"{name} no-op re-run (median of 3)", noop, noop_target),
    ]
    for label, seconds, target in rows:
        print(f"{label:<34} {seconds:6.1f} s" + (f"   (target < {target} s)" if target else ""))


if __name__ == "__main__":
    main()
