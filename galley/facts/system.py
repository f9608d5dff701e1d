"""Facts about a host's systemd units, pending restarts and operating system."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pyinfra.api import FactBase

# systemd unit names: letters, digits and ":-_.\@", optionally with a type suffix.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+")
_UNIT_PROPERTIES = (
    "LoadState,ActiveState,SubState,ActiveEnterTimestamp,StateChangeTimestamp,MainPID,NRestarts,"
    "UnitFileState"
)
_UNITS_HEADER = "##galley-units "
_MTIMES_HEADER = "##galley-mtimes"
_STAMP_HEADER = "##galley-stamp"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _unit_states_command(units: tuple[str, ...]) -> str:
    """``systemctl show`` for ``units``, preceded by a line naming them (output is in order)."""
    if not units:
        raise ValueError("no systemd units given")
    for unit in units:
        if not _UNIT_NAME.fullmatch(unit):
            raise ValueError(f"invalid systemd unit name: {unit!r}")
    quoted = " ".join(shlex.quote(unit) for unit in units)
    # us+utc: microsecond precision, so a file written within the start's second still counts.
    return (
        f"printf '%s\\n' {shlex.quote(_UNITS_HEADER + ' '.join(units))} && "
        f"systemctl show --timestamp=us+utc -p {_UNIT_PROPERTIES} -- {quoted}"
    )


def parse_timestamp(value: str) -> datetime | None:
    """Parse ``Day YYYY-MM-DD HH:MM:SS[.UUUUUU] UTC`` (``--timestamp=us+utc``); None if unset."""
    parts = value.split()
    if len(parts) != 4 or parts[3] != "UTC":
        return None
    layout = "%Y-%m-%d %H:%M:%S.%f" if "." in parts[2] else "%Y-%m-%d %H:%M:%S"
    try:
        return datetime.strptime(f"{parts[1]} {parts[2]}", layout).replace(tzinfo=UTC)
    except ValueError:
        return None


def _unit_state(properties: dict[str, str]) -> dict[str, Any]:
    main_pid = int(properties.get("MainPID") or 0)
    restarts = properties.get("NRestarts", "")
    return {
        "load": properties.get("LoadState", "not-found"),
        "active": properties.get("ActiveState", "inactive"),
        "sub": properties.get("SubState", "dead"),
        "since": parse_timestamp(properties.get("ActiveEnterTimestamp", "")),
        "changed": parse_timestamp(properties.get("StateChangeTimestamp", "")),
        "main_pid": main_pid or None,
        "restarts": int(restarts) if restarts.isdigit() else None,
        "enabled": properties.get("UnitFileState") == "enabled",
    }


def _parse_unit_states(output: list[str]) -> dict[str, dict[str, Any]]:
    units: list[str] = []
    blocks: list[dict[str, str]] = [{}]
    for line in output:
        if line.startswith(_UNITS_HEADER):
            units = line.removeprefix(_UNITS_HEADER).split()
        elif not line.strip():
            blocks.append({})
        else:
            key, _, value = line.partition("=")
            blocks[-1][key] = value
    blocks = [block for block in blocks if block]
    return {
        unit: _unit_state(blocks[index] if index < len(blocks) else {})
        for index, unit in enumerate(units)
    }


class UnitStates(FactBase):
    """State of systemd units, from one ``systemctl show`` call.

    Returns ``{"etcd": {"load": "loaded", "active": "active", "sub": "running",
    "since": datetime (UTC, ActiveEnterTimestamp) | None, "changed": datetime (UTC,
    StateChangeTimestamp) | None, "main_pid": 1234 | None, "restarts": 0 | None}}`` keyed by
    the names given; a unit that does not exist has load "not-found". ``units`` may be one
    name or several; ``.service`` is implied by systemd.
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "systemctl"

    def command(self, units: str | Iterable[str] = ("etcd",)) -> str:
        return _unit_states_command(_as_tuple(units))

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        return _parse_unit_states(output)


def mtime_us(value: str) -> int | None:
    """``stat -c %.6Y`` or ``find -printf %T@`` output (``1715000000.123456``) as integer
    microseconds."""
    seconds, _, fraction = value.strip().partition(".")
    if not seconds.isdigit() or not (fraction.isdigit() or not fraction):
        return None
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0")[:6])


class PendingRestart(FactBase):
    """Whether ``unit`` must be (re)started to pick up ``paths``.

    True when the unit is not active, or when any path (or, for a symlink, the link itself or
    its target) was modified after the unit last became active. Comparing modification times
    with the unit's start keeps "restart if files changed" durable: a run interrupted between
    writing a file and restarting still restarts on the next run. Missing paths are ignored;
    the default (state unreadable) is True. With ``stamp`` (a file touched after each reload),
    a path counts only when it is newer than both the start and the stamp (a pending reload).
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "systemctl"

    def command(self, unit: str, paths: str | Iterable[str], stamp: str | None = None) -> str:
        command = _unit_states_command((unit,))
        quoted = " ".join(shlex.quote(path) for path in _as_tuple(paths))
        if not quoted:
            return command
        if stamp:
            command += (
                f" && echo '{_STAMP_HEADER}' && "
                f"{{ stat -c %.6Y -- {shlex.quote(stamp)} 2>/dev/null; true; }}"
            )
        # Target and link mtimes both count: switching a symlink only changes the link's.
        return (
            f"{command} && echo '{_MTIMES_HEADER}' && "
            f"{{ stat -L -c %.6Y -- {quoted} 2>/dev/null; stat -c %.6Y -- {quoted} 2>/dev/null; "
            "true; }"
        )

    @staticmethod
    def default() -> bool:
        return True

    def process(self, output: list[str]) -> bool:
        if _MTIMES_HEADER in output:
            split = output.index(_MTIMES_HEADER)
            output, mtime_lines = output[:split], output[split + 1 :]
        else:
            mtime_lines = []
        stamped = None
        if _STAMP_HEADER in output:
            split = output.index(_STAMP_HEADER)
            output, stamp_lines = output[:split], output[split + 1 :]
            stamped = mtime_us(stamp_lines[0]) if stamp_lines else None
        state = next(iter(_parse_unit_states(output).values()), _unit_state({}))
        return restart_pending(state, stamped, [mtime_us(line) for line in mtime_lines])


def restart_pending(
    unit_state: dict[str, Any], stamp_us: int | None, mtimes_us: Iterable[int | None]
) -> bool:
    """Whether a unit in ``unit_state`` (`UnitStates`) must be (re)started: it is not active,
    or a file it runs from was modified (``mtimes_us``) after it became active and after
    ``stamp_us`` (its last reload), see `PendingRestart`."""
    since = unit_state["since"]
    if unit_state["active"] != "active" or since is None:
        return True
    started_us = max((since - _EPOCH) // timedelta(microseconds=1), stamp_us or 0)
    return any(mtime > started_us for mtime in mtimes_us if mtime is not None)


class OsInfo(FactBase):
    """Operating system and kernel: ``{"id": "debian", "version_id": "12",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64"}``
    (values from os-release are None when absent)."""

    def command(self) -> str:
        return (
            "uname -r && "
            "{ cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true; }"
        )

    def process(self, output: list[str]) -> dict[str, str | None]:
        release: dict[str, str] = {}
        for line in output[1:]:
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                try:
                    release[key.strip()] = " ".join(shlex.split(value))
                except ValueError:
                    release[key.strip()] = value
        return {
            "id": release.get("ID"),
            "version_id": release.get("VERSION_ID"),
            "pretty_name": release.get("PRETTY_NAME"),
            "kernel": output[0].strip() if output else None,
        }
