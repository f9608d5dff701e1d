"""`galley lab ...`: boot, change and remove the lab's droplets (`galley.lab.lifecycle`).

`galley.cli` hands every ``galley lab`` command line here; nothing of the lab is imported
before that.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from galley.lab import lifecycle
from galley.lab.droplets import ssh_command
from galley.lab.state import LAB_DIR, LabState
from galley.lab.system import LabError
from galley.lab.topology import TopologyError, plan_droplets

# `galley lab add --role`: the inventory group of each role.
ROLE_GROUPS = {
    "etcd": "etcd",
    "control-plane": "control_plane",
    "worker": "workers",
    "monitoring": "monitoring",
}
CHANGES = {
    "kill": (lifecycle.kill, "stop a droplet abruptly, as a hardware fault would (disk kept)"),
    "start": (lifecycle.start, "boot a killed droplet again from its disk"),
    "replace": (
        lifecycle.replace,
        "destroy a droplet and boot a fresh one: same name and address, new keys",
    ),
    "remove": (lifecycle.remove, "delete a droplet"),
}
# Held by every command that changes the lab, so that (say) a `down` cannot run while an `up`
# is still starting services. Beside the lab's directory, whose contents `down` removes.
LOCK_PATH = LAB_DIR.parent / "lab.lock"
# The commands that only read the lab.
READING = frozenset({"status", "ssh"})


@contextmanager
def _changing_alone() -> Iterator[None]:
    """Hold the lab's lock for one changing command, or refuse while another one holds it."""
    lifecycle.require_root()
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(
                f"another `galley lab` command is changing the lab (it holds {LOCK_PATH}); "
                "nothing was done: run this one when it has ended"
            ) from None
        yield


def _up(args: argparse.Namespace) -> None:
    lifecycle.up(
        plan_droplets(
            args.etcd, args.control_plane, args.workers, args.stacked_etcd, args.monitoring
        )
    )


def _ssh(args: argparse.Namespace) -> None:
    state = LabState.load()
    if state is None:
        raise LabError("no lab is up")
    droplet = state.droplet(args.name)
    command = ssh_command(droplet.address, state.ssh_key, state.known_hosts, *args.command)
    os.execvp(command[0], command)


def parser() -> argparse.ArgumentParser:
    """The ``galley lab`` command line."""
    lab = argparse.ArgumentParser(
        prog="galley lab", description="local lab of systemd-nspawn droplets"
    )
    commands = lab.add_subparsers(dest="lab_command", required=True)
    up = commands.add_parser(
        "up", help="boot the lab (default: 3 etcd, 2 control-plane, 2 workers, 1 monitoring)"
    )
    up.add_argument("--etcd", type=int, default=3, help="etcd droplets (default 3)")
    up.add_argument("--control-plane", type=int, default=2, help="control-plane droplets")
    up.add_argument("--workers", type=int, default=2, help="worker droplets (default 2)")
    up.add_argument("--monitoring", type=int, default=1, help="monitoring droplets (default 1)")
    up.add_argument(
        "--stacked-etcd",
        action="store_true",
        help="run etcd on the control-plane droplets instead of separate ones",
    )
    up.set_defaults(run=_up)
    down = commands.add_parser("down", help="remove everything `lab up` created")
    down.set_defaults(run=lambda args: lifecycle.down())
    status = commands.add_parser("status", help="list droplets and services")
    status.set_defaults(run=lambda args: print("\n".join(lifecycle.status())))
    add = commands.add_parser("add", help="boot one more droplet on the running lab")
    add.add_argument("--role", required=True, choices=ROLE_GROUPS)
    add.add_argument("--name", help="droplet name (default: the role's next free number)")
    add.set_defaults(run=lambda args: lifecycle.add(ROLE_GROUPS[args.role], args.name))
    for command, (change, text) in CHANGES.items():
        changing = commands.add_parser(command, help=text)
        changing.add_argument("name")
        changing.set_defaults(run=lambda args, change=change: change(args.name))
    ssh = commands.add_parser("ssh", help="ssh into a droplet as root")
    ssh.add_argument("name")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(run=_ssh)
    return lab


def main(argv: list[str]) -> int:
    """Run ``galley lab`` with ``argv`` (the words after ``lab``): 0 done, 1 failed."""
    args = parser().parse_args(argv)
    try:
        if args.lab_command in READING:
            args.run(args)
        else:
            with _changing_alone():
                args.run(args)
    except (LabError, TopologyError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f"galley: error: {message}", file=sys.stderr)
        return 1
    return 0
