"""How the cost of a run grows with the region: labs of 7, 20 and 38 droplets.

`python bench/scale.py [--sizes 7,20,38]` (root; takes the lab down and brings its own up,
so run it only when nobody else uses the lab). For each size: first converge of
`deploys/cluster.py`, the no-op re-run (median of 3, with the pyinfra process's CPU seconds
and peak memory), operations per host, `galley report`, and the no-op per host. Sizes other
than 7 are 5 etcd, 3 control-plane and the rest workers; 7 is the default lab (3/2/2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOY = ("pyinfra", "-y", "inventories/lab.py", "deploys/cluster.py")


@dataclass(frozen=True)
class Run:
    """One command's wall seconds, CPU seconds (user + system) and peak memory (MiB)."""

    wall: float
    cpu: float
    peak_mib: float
    stdout: str
    code: int


def run(*args: str, allowed: tuple[int, ...] = (0,)) -> Run:
    """Run a console script of this virtualenv from the repository root, measured by its own
    resource usage (`os.wait4`: this process and the children it waited for); an exit status
    other than ``allowed`` stops the bench."""
    started = time.monotonic()
    process = subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stdout = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in allowed:
        tail = "\n".join(stdout.splitlines()[-15:])
        raise SystemExit(f"{' '.join(args)} exited {process.returncode}:\n{tail}")
    wall = time.monotonic() - started
    return Run(
        wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout, process.returncode
    )


def shape(size: int) -> tuple[int, int, int]:
    """(etcd, control plane, workers) of a lab of ``size`` droplets."""
    return (3, 2, 2) if size == 7 else (5, 3, size - 8)


def measure(size: int) -> dict[str, float]:
    """Bring up a lab of ``size`` droplets and measure it."""
    etcd, control_plane, workers = shape(size)
    run("galley", "lab", "down")
    run(
        "galley", "lab", "up", "--etcd", str(etcd),
        "--control-plane", str(control_plane), "--workers", str(workers), "--monitoring", "0",
    )  # fmt: skip
    run("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", "inventories/lab.py")
    first = run(*DEPLOY)
    noops = [run(*DEPLOY, "--json") for _ in range(3)]
    operations = json.loads(noops[0].stdout)["results"]["operations"]
    changed = sum(len(op["success"]) for op in operations)
    for op in operations:  # a no-op that changed something says what, on which hosts
        if op["success"]:
            print(
                f"changed by the no-op: {op['name']} on {', '.join(op['success'])}", file=sys.stderr
            )
    per_host = sum(len(op["success"]) + len(op["no_change"]) for op in operations) / size
    # A new cluster: only break-glass may write the admins' binding (exit 3 without it).
    if run("galley", "admin", "credentials", "inventories/lab.py", allowed=(0, 3)).code == 3:
        run("galley", "admin", "credentials", "inventories/lab.py", "--break-glass")
    # The report's own time, whether or not it finds problems (exit 1): on a loaded 2-core
    # lab a proxy's health check of a stand-in apiserver may time out now and then.
    report = min(
        run("galley", "report", "inventories/lab.py", allowed=(0, 1)).wall for _ in range(3)
    )
    noop = statistics.median(r.wall for r in noops)
    return {
        "droplets": size,
        "first converge s": first.wall,
        "no-op s": noop,
        "no-op CPU s": statistics.median(r.cpu for r in noops),
        "peak MiB": max(r.peak_mib for r in noops),
        "ops/host": per_host,
        "changed": changed,
        "report s": report,
        "no-op ms/host": 1000 * noop / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="7,20,38", help="lab sizes, comma-separated")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    rows = []
    for size in sizes:
        rows.append(measure(size))
        print(f"measured {size} droplets: {rows[-1]}", file=sys.stderr, flush=True)
    run("galley", "lab", "down")
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{row[key]:.0f}" if key in ("droplets", "changed") else f"{row[key]:.1f}"
                 for key in header]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
