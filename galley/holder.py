"""Who runs a galley command (user, machine, process) and whether that run is still alive.

The cluster lock (`galley.lock`) and the day-2 journals (`galley.journal`) record the
holder of a run, so that the next command can tell a live run (named, waited for) from one
that died (taken over, resumed). A process counts as the same run only while its pid runs
with the start time recorded: a pid reused after a reboot is not mistaken for it.
"""

from __future__ import annotations

import getpass
import os
import socket


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None when it does not run)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def this_run() -> dict:
    """The record of this process: ``holder`` (``user@machine pid N``), machine, pid and
    its start time."""
    machine, pid = socket.gethostname(), os.getpid()
    return {
        "holder": f"{getpass.getuser()}@{machine} pid {pid}",
        "machine": machine,
        "pid": pid,
        "pid_start": _start_ticks(pid),
    }


def _here(record: dict) -> bool:
    return record.get("machine") == socket.gethostname() and isinstance(record.get("pid"), int)


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
    """Whether ``record`` names this very process."""
    return record.get("machine") == socket.gethostname() and record.get("pid") == os.getpid()
