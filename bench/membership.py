"""Seconds to add one etcd member (from `member add` to promoted) and to replace a dead one.

`python bench/membership.py [--rounds N]` takes the lab down, brings a fresh default one up
(root; run it only when nobody else uses the lab), deploys the cluster, then N times: adds two
etcd droplets (3 -> 5) and runs `deploys/etcd.py`, kills and replaces one and runs it again,
and takes both out with `galley etcd remove` and `galley lab remove`. Each figure is read from
the deploy's own progress lines as they arrive: add = "add NAME" to "NAME is a voter";
replace = "remove member NAME" to "NAME is a voter"; plus each deploy's wall.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NEW = ("lab-etcd-4", "lab-etcd-5")


def cli(*args: str) -> None:
    subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def timed_deploy(step: str, names: tuple[str, ...]) -> tuple[list[float], float]:
    """Run the etcd deploy; (for each of ``names``, seconds from its ``step`` line to its
    "is a voter" line; the deploy's wall seconds)."""
    start = time.monotonic()
    process = subprocess.Popen(
        [str(BIN / "pyinfra"), "-y", "inventories/lab.py", "deploys/etcd.py"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    began: dict[str, float] = {}
    took: dict[str, float] = {}
    for line in process.stdout or ():
        for name in names:
            if name not in began and f"{step} {name}" in line:
                began[name] = time.monotonic()
            if name in began and f"{name} is a voter" in line:
                took[name] = time.monotonic() - began[name]
    if process.wait() != 0 or len(took) != len(names):
        raise SystemExit(f"the deploy did not {step} and promote {', '.join(names)}")
    return [took[name] for name in names], time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    cli("galley", "lab", "down")
    cli("galley", "lab", "up")
    cli("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", "inventories/lab.py")
    cli("pyinfra", "-y", "inventories/lab.py", "deploys/cluster.py")
    figures: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name in NEW:
            cli("galley", "lab", "add", "--role", "etcd", "--name", name)
            cli("galley", "hostkeys", "accept", "inventories/lab.py", name)
        cli("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", "inventories/lab.py")
        added, wall = timed_deploy("add", NEW)
        figures.setdefault("add", []).extend(added)
        figures.setdefault("add deploy", []).append(wall)
        cli("galley", "lab", "kill", NEW[0])
        cli("galley", "lab", "replace", NEW[0])
        cli("galley", "hostkeys", "accept", "inventories/lab.py", NEW[0])
        replaced, wall = timed_deploy("remove member", NEW[:1])
        figures.setdefault("replace", []).extend(replaced)
        figures.setdefault("replace deploy", []).append(wall)
        for name in reversed(NEW):
            cli("galley", "etcd", "remove", "inventories/lab.py", name, "--allow-even", "--yes")
            cli("galley", "lab", "remove", name)
    cli("pyinfra", "-y", "inventories/lab.py", "deploys/cluster.py")
    print(f"{'figure (seconds)':<44} {'min':>6} {'median':>7} {'max':>6}   rounds={rounds}")
    labels = {
        "add": "add: member add -> promoted",
        "add deploy": "add two: whole deploys/etcd.py run",
        "replace": "replace dead member: remove -> promoted",
        "replace deploy": "replace: whole deploys/etcd.py run",
    }
    for key, label in labels.items():
        values = figures[key]
        print(f"{label:<44} {min(values):6.1f} {statistics.median(values):7.1f} {max(values):6.1f}")


if __name__ == "__main__":
    main()
