"""What a node-local API proxy (HAProxy, `galley.components.api_proxy`) sees of the apiservers."""

from __future__ import annotations

import csv
import shlex
from typing import Any

from pyinfra.api import FactBase

STATS_SOCKET = "/run/api-proxy/stats.sock"
BACKEND = "apiservers"


class ApiProxyBackends(FactBase):
    """Each apiserver the proxy balances over, from HAProxy's CSV statistics.

    Returns ``{"lab-cp-1": {"address": "198.18.0.13:6443", "status": "UP", "check": "L7OK"}}``
    (status as HAProxy says it: UP, DOWN, MAINT, "UP 1/2" while changing), or None when no
    proxy answers on the socket.
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "curl"

    def command(self, socket: str = STATS_SOCKET) -> str:
        quoted = shlex.quote(socket)
        return (
            f"test ! -S {quoted} || "
            f"curl -fsS --max-time 5 --unix-socket {quoted} 'http://localhost/stats;csv' || true"
        )

    def process(self, output: list[str]) -> dict[str, dict[str, str]] | None:
        if not output or not output[0].startswith("# "):
            return None
        rows = csv.DictReader([output[0].removeprefix("# "), *output[1:]])
        return {
            row["svname"]: {
                "address": row.get("addr") or "",
                "status": row.get("status") or "",
                "check": (row.get("check_status") or "").removeprefix("* "),
            }
            for row in rows
            if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND")
        }
