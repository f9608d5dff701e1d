"""Text that came from a host, an API or user code, made safe to print on one terminal line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` without control characters (escape sequences, carriage returns): what a
    host, an API or a droplet name says cannot move the cursor or recolour the terminal."""
    return _CONTROL.sub("?", str(text)).replace("\n", " ").strip()
