"""Benchmark: seconds `galley report` takes on a lab of 40 droplets (target: under 5 s).

Brings up a lab of 3 etcd, 3 control-plane and 34 worker droplets (taking down a lab of
another shape first), bootstraps Vault and deploys etcd so every fact has something to read,
then times `galley report inventories/lab.py` three times and prints the median. It leaves
the 40-droplet lab up and restores nothing else. Run as root from the repository root:
`python bench/report.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from galley.lab.state import LabState

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHAPE = {"etcd": 3, "control-plane": 3, "workers": 34}
RUNS = 3


def run(*args: str) -> subprocess.CompletedProcess:
    """Run a console script of this virtualenv from the repository root."""
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )


def checked(*args: str) -> None:
    result = run(*args)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def main() -> None:
    """Bring up the lab, time the report, print the median in seconds."""
    state = LabState.load()
    if state is not None and len(state.droplets) != sum(SHAPE.values()):
        checked("galley", "lab", "down")
    checked("galley", "lab", "up", *(f"--{k}={v}" for k, v in SHAPE.items()))
    checked("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", "inventories/lab.py")
    checked("pyinfra", "-y", "inventories/lab.py", "deploys/etcd.py")
    seconds = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = run("galley", "report", "inventories/lab.py")
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"galley report exited {result.returncode}:\n{result.stdout}{result.stderr}")
        hosts = len(result.stdout.split("\n\n")[0].splitlines()) - 2  # title and header
        if hosts != sum(SHAPE.values()):
            sys.exit(f"the report lists {hosts} hosts, not {sum(SHAPE.values())}")
    print(
        f"galley report, {sum(SHAPE.values())} droplets: median {statistics.median(seconds):.2f} s"
    )
    print("runs: " + ", ".join(f"{s:.2f} s" for s in seconds))


if __name__ == "__main__":
    main()
