"""The host firewall's state on a host (`galley.components.host_firewall`): which rule set it
keeps, and whether the live table still is that rule set."""

from __future__ import annotations

import hashlib
from typing import Any

from pyinfra.api import FactBase

RULES_DIR = "/etc/galley/firewall"
KEPT_PATH = f"{RULES_DIR}/kept.nft"  # the rules confirmed reachable; loaded at boot
# How nft listed the kept rules right after they were confirmed: the live table is compared
# with it (nft's own rendering, not the file galley wrote).
LISTING_PATH = f"{RULES_DIR}/kept.listing"
TABLE = "inet galley"
_KEPT, _LIVE, _LISTING, _NO_TABLE = "##kept", "##live", "##listing", "##no-table"


def text_digest(lines: list[str]) -> str:
    """The sha256 of a file whose lines (as pyinfra splits them) are ``lines``."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


class HostFirewall(FactBase):
    """``kept``: the sha256 of the kept rule set (None: none kept); ``table``: whether the
    live table is loaded; ``drift``: whether it differs from the kept rules (missing,
    changed by hand, or rolled back). The files and the listing come back whole (a few KiB)
    and are compared here: no digest programs run on the host."""

    def command(self) -> str:
        return (
            f"echo '{_KEPT}'; [ ! -s {KEPT_PATH} ] || cat {KEPT_PATH}; "
            f"echo '{_LIVE}'; nft list table {TABLE} 2>/dev/null || echo '{_NO_TABLE}'; "
            f"echo '{_LISTING}'; [ ! -s {LISTING_PATH} ] || cat {LISTING_PATH}"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: dict[str, list[str]] = {_KEPT: [], _LIVE: [], _LISTING: []}
        current: list[str] = []
        for line in output:
            if line in sections:
                current = sections[line]
            else:
                current.append(line)
        kept, live, listing = sections[_KEPT], sections[_LIVE], sections[_LISTING]
        table = live != [_NO_TABLE]
        return {
            "kept": text_digest(kept) if kept else None,
            "table": table,
            "drift": not table or live != listing,
        }
