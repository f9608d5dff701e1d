"""Facts about release tarballs installed by galley.host.release under ``<prefix>/<release>/``."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase

DEFAULT_PREFIX = "/opt/galley"
# Written last into a version directory: its presence (holding the sha256) marks it complete.
COMPLETE_MARKER = ".galley-complete"


class InstalledReleases(FactBase):
    """Complete versions of a release and the one ``current`` points at.

    Returns ``{"current": "3.5.30" | None, "installed": ["3.5.29", "3.5.30"],
    "sha256": {"3.5.29": "...", "3.5.30": "..."}}`` (``installed`` sorted as strings; only
    directories whose completion marker exists count). The first argument is called
    ``release`` because ``name`` is reserved for pyinfra's global arguments.
    """

    def command(self, release: str, prefix: str = DEFAULT_PREFIX) -> str:
        base = shlex.quote(f"{prefix.rstrip('/')}/{release}")
        return (
            f"base={base}; "
            'if [ -L "$base/current" ]; then '
            'printf "current %s\\n" "$(readlink "$base/current")"; fi; '
            f'for m in "$base"/*/{COMPLETE_MARKER}; do '
            '[ -f "$m" ] || continue; d="${m%/*}"; [ -L "$d" ] && continue; '
            'printf "installed %s %s\\n" "${d##*/}" "$(head -n 1 "$m")"; '
            "done; true"
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return {"current": None, "installed": [], "sha256": {}}

    def process(self, output: list[str]) -> dict[str, Any]:
        result = self.default()
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "current":
                result["current"] = rest or None
            elif kind == "installed":
                version, _, sha256 = rest.partition(" ")
                result["sha256"][version] = sha256
        result["installed"] = sorted(result["sha256"])
        return result


class LinkTargets(FactBase):
    """Where each of ``paths`` points: ``{path: target}``, None for a missing path or one that
    is not a symlink (one round trip for every link of a release)."""

    def command(self, paths: Sequence[str]) -> str:
        quoted = " ".join(shlex.quote(path) for path in paths)
        return f'for p in {quoted}; do printf "%s\\t%s\\n" "$p" "$(readlink -- "$p")"; done'

    def process(self, output: list[str]) -> dict[str, str | None]:
        targets: dict[str, str | None] = {}
        for line in output:
            path, _, target = line.partition("\t")
            targets[path] = target or None
        return targets
