"""The host firewall's state on a host (`galley.components.host_firewall`): which rule set it
keeps, and whether the live table still is that rule set."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase

RULES_DIR = "/etc/galley/firewall"
KEPT_PATH = f"{RULES_DIR}/kept.nft"  # the rules confirmed reachable; loaded at boot
# How nft listed the kept rules right after they were confirmed: the live table is compared
# with it (nft's own rendering, not the file galley wrote).
LISTING_PATH = f"{RULES_DIR}/kept.listing"
TABLE = "inet galley"


class HostFirewall(FactBase):
    """``kept``: the sha256 of the kept rule set (None: none kept); ``table``: whether the
    live table is loaded; ``drift``: whether it differs from the kept rules (missing,
    changed by hand, or rolled back)."""

    def command(self) -> str:
        return (
            f"if [ -s {KEPT_PATH} ]; then sha256sum < {KEPT_PATH} | cut -d' ' -f1; "
            "else echo none; fi; "
            f"if live=$(nft list table {TABLE} 2>/dev/null); then "
            "echo table; printf '%s\\n' \"$live\" | sha256sum | cut -d' ' -f1; "
            "else echo no-table; echo none; fi; "
            f"if [ -s {LISTING_PATH} ]; then sha256sum < {LISTING_PATH} | cut -d' ' -f1; "
            "else echo none; fi"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        kept, table, live, listed = (output + ["none"] * 4)[:4]
        return {
            "kept": None if kept == "none" else kept,
            "table": table == "table",
            "drift": table != "table" or live != listed,
        }
