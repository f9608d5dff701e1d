"""The confirmation every day-2 command that changes a cluster asks for (or ``--yes``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def confirmed(lines: Sequence[str], yes: bool, command: str, question: str) -> bool:
    """Print ``lines`` (the plan), then ask ``question``; True with ``yes``. Without a
    terminal and without ``yes``, refuse, saying so."""
    for line in lines:
        print(line, flush=True)
    if yes:
        return True
    if not sys.stdin.isatty():
        refusal = f"galley: {command}: not confirmed: pass --yes (nothing was changed)"
        print(refusal, file=sys.stderr)
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")
