"""Durable restart-on-change for systemd units (shared by every component's deploy).

A unit restarts when a file it runs from (binary link, unit file, config, certificates) is
newer than its last start (`galley.facts.PendingRestart`), so a run killed between writing a
file and restarting still restarts on the next run.

When pyinfra detects changes up front (``--dry``, or a run without ``-y``), every operation has
already been evaluated, so the restart is added only where one is due and the plan shows
exactly which units will restart. With ``-y`` nothing is evaluated before it runs: asking
whether the operations will change would run every one of their facts twice, so the restart
is always added and decides at execution time with one fact.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Sequence

from pyinfra import host, state
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.operations import python

from galley.facts.system import PendingRestart
from galley.host import observed

# root's own directory: in /run/lock (mode 1777) any local user could hold the lock and so
# hold back every renewal until the certificates expire. /run is empty after a boot, when
# every unit starts afresh.
RUN_DIR = "/run/galley"
RESTART_LOCK = f"{RUN_DIR}/restart.lock"
RELOAD_STAMPS = f"{RUN_DIR}/reloaded"  # `reload_stamp`


def under_restart_lock(command: str) -> str:
    """``command`` run holding the host's restart lock (waiting up to 120 s for it)."""
    return f"install -d -m 0700 {RUN_DIR} && flock -w 120 {RESTART_LOCK} {command}"


class RestartError(Exception):
    """A unit could not be restarted, or did not come back healthy."""


def wait_until_healthy(problem: Callable[[], str | None], timeout: float) -> str | None:
    """Poll ``problem()`` every second until it returns None or ``timeout`` seconds pass;
    return the last problem (None when healthy)."""
    deadline = time.monotonic() + timeout
    while (found := problem()) is not None and time.monotonic() <= deadline:
        time.sleep(1)
    return found


def systemctl_restart(state: State, host: Host, unit: str) -> None:
    """Restart ``unit`` on ``host`` (a `restart_when_pending` function without a health gate)."""
    host.log(f"restarting {unit}")
    # One restart at a time on a host, whoever asks (another galley run, a renewal timer).
    ok, output = host.run_shell_command(
        under_restart_lock(f"systemctl restart {shlex.quote(unit)}")
    )
    if not ok:
        raise RestartError(f"{host.name}: systemctl restart {unit} failed: {output.stderr}")


def reload_stamp(unit: str) -> str:
    """The file touched after each reload of ``unit`` (a change older than it is applied)."""
    return f"{RELOAD_STAMPS}/{unit}"


def systemctl_reload(state: State, host: Host, unit: str) -> None:
    """Reload ``unit`` on ``host`` and record when (`reload_stamp`); see `reload_when_pending`."""
    host.log(f"reloading {unit}")
    stamp = shlex.quote(reload_stamp(unit))
    ok, output = host.run_shell_command(
        under_restart_lock(f"systemctl reload {shlex.quote(unit)}")
        + f" && mkdir -p {RELOAD_STAMPS} && touch {stamp}"
    )
    if not ok:
        raise RestartError(f"{host.name}: systemctl reload {unit} failed: {output.stderr}")


def reload_when_pending(
    unit: str, watched: Iterable[str], changes: Sequence[OperationMeta], started: OperationMeta
) -> None:
    """Reload ``unit`` at execution time if its ``watched`` files are newer than its start and
    its last reload (durable as `restart_when_pending` is)."""
    restart_when_pending(
        unit,
        watched,
        changes,
        started,
        function=systemctl_reload,
        name=f"Reload {unit} (only if its files changed)",
        stamp=reload_stamp(unit),
    )


def restart_when_pending(
    unit: str,
    watched: Iterable[str],
    changes: Sequence[OperationMeta],
    started: OperationMeta,
    function: Callable[..., None] = systemctl_restart,
    serial: bool = False,
    name: str | None = None,
    stamp: str | None = None,
    **kwargs,
) -> None:
    """Restart ``unit`` at execution time if its ``watched`` files are newer than its start.

    ``changes`` are this run's operations that may touch those files; ``started`` is the
    operation that starts the unit (a unit it just started needs no restart). ``function``
    (``function(state, host, unit=..., **kwargs)``) does the restart, e.g. with a health gate;
    ``serial`` restarts one host at a time; ``stamp`` is a file whose mtime also counts as a
    start (see `galley.facts.PendingRestart`).
    """
    paths = sorted(watched)
    # Nothing the unit runs from changes in this run: what was read while preparing decides.
    settled = all(observed.is_settled(meta) for meta in (*changes, started))
    if settled and observed.restart_due(unit, paths, stamp) is False:
        return
    facts = {"unit": unit, "paths": paths, "stamp": stamp}
    options: dict = {}
    if state.should_check_for_changes():
        # Everything was evaluated already: decide now, so the plan (--dry) lists exactly the
        # restarts the run will do. A unit this run starts needs no restart.
        due = any(meta.will_change for meta in changes) or host.get_fact(PendingRestart, **facts)
        if not due or started.will_change:
            return
    else:
        # A unit this run started needs no restart (and no round trip to find that out).
        options["_if"] = lambda: not started.did_change() and host.get_fact(PendingRestart, **facts)
    python.call(
        name=name or f"Restart {unit} (only if its files changed)",
        function=function,
        unit=unit,
        _serial=serial,
        **options,
        **kwargs,
    )
