"""The confirmation every destructive day-2 command asks for (``--yes`` skips it)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def confirmed(
    plan: Sequence[str],
    yes: bool,
    command: str,
    question: str = "remove it?",
    ask: Callable[[str], str] = input,
) -> bool:
    """Print ``plan``, then ask ``question`` unless ``yes``. Without a terminal (a script)
    and without ``yes`` the answer is no, and ``galley: COMMAND`` says to pass ``--yes``."""
    for line in plan:
        print(line, flush=True)
    if yes:
        return True
    if not sys.stdin.isatty():
        print(
            f"galley: {command}: not confirmed: pass --yes (nothing was changed)", file=sys.stderr
        )
        return False
    return ask(f"{question} [y/N] ").strip().lower() in ("y", "yes")
