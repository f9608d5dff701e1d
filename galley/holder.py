"""Who runs a galley command (user, machine, process, a random run id) and whether that run
is still alive.

The cluster lock (`galley.lock`) and the day-2 journals (`galley.journal`) record the
holder of a run, so that the next command can tell a live run (named, waited for) from one
that died (resumed). A machine is told by its machine id (``/etc/machine-id``), not its
hostname: two containers may share a hostname. A process counts as the same run only while its
pid runs with the start time recorded: a pid reused after a reboot is not mistaken for it.
"""

from __future__ import annotations

import functools
import getpass
import os
import secrets
import socket

MACHINE_ID = "/etc/machine-id"
# This process's run: random, so that no other process anywhere is taken for it.
RUN_ID = secrets.token_hex(8)


@functools.cache
def machine_id() -> str:
    """This machine's id (``/etc/machine-id``); its hostname where it has none."""
    try:
        with open(MACHINE_ID) as found:
            return found.read().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it does not run)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def this_run() -> dict:
    """The record of this process: ``holder`` (``user@host pid N, run R``), the run id, the
    machine's id and hostname, pid and its start time."""
    host, pid = socket.gethostname(), os.getpid()
    return {
        "holder": f"{getpass.getuser()}@{host} pid {pid}, run {RUN_ID}",
        "run": RUN_ID,
        "machine_id": machine_id(),
        "machine": host,
        "pid": pid,
        "pid_start": _start_ticks(pid),
    }


def _here(record: dict) -> bool:
    return record.get("machine_id") == machine_id() and isinstance(record.get("pid"), int)


def alive_here(record: dict) -> bool:
    """Whether the run ``record`` names is a process on this machine that still runs."""
    if not _here(record):
        return False
    started = _start_ticks(record["pid"])
    recorded = record.get("pid_start")
    return started is not None and (not isinstance(recorded, int) or recorded == started)


def gone(record: dict) -> bool:
    """Whether the run ``record`` names was a process on this machine that no longer runs:
    provably over. A run on another machine is never assumed gone."""
    return _here(record) and not alive_here(record)


def is_this_process(record: dict) -> bool:
    """Whether ``record`` names this very process (its run id)."""
    return record.get("run") == RUN_ID
