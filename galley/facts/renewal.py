"""The outcome of a host's last certificate renewal run: the state file the renewal script
(`galley.components.renewal`) writes, ``key=value`` lines."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from pyinfra.api import FactBase

STATE_DIR = "/var/lib/galley/renewal"
STATE_PATH = f"{STATE_DIR}/state"  # written by the renewal script only


@dataclass(frozen=True)
class RenewalState:
    """What the last renewal run recorded: ``status`` ``ok`` or ``failing``, when it ran, since
    when it fails and why, and when each certificate is next due (path -> UTC time)."""

    status: str
    checked: str
    failing_since: str | None = None
    error: str | None = None
    next_renewal: dict[str, str] = field(default_factory=dict)


def parse_state(text: str) -> RenewalState | None:
    """The state file's content, or None when the script never ran (empty text)."""
    values: dict[str, str] = {}
    next_renewal: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.startswith("next:"):
            next_renewal[key.removeprefix("next:")] = value
        elif key:
            values[key] = value
    if "status" not in values:
        return None
    return RenewalState(
        status=values["status"],
        checked=values.get("checked", ""),
        failing_since=values.get("failing_since"),
        error=values.get("error"),
        next_renewal=next_renewal,
    )


class RenewalStatus(FactBase):
    """The renewal state file as a dict (`RenewalState`'s fields), None when the timer never
    ran: ``status`` ``ok`` or ``failing``, ``checked``, ``failing_since``, the one-line
    ``error``, and ``next_renewal``, each certificate's next renewal time by path."""

    def command(self, path: str = STATE_PATH) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null; true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        state = parse_state("\n".join(output))
        return None if state is None else asdict(state)
