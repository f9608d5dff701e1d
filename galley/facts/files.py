"""Facts about files galley writes whole: their digest, mode and owner in one round trip."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class FileDigest(FactBase):
    """``{"sha256": ..., "mode": "600", "user": "root", "group": "root"}`` of the file at
    ``path``, or None when it does not exist. Only the digest leaves the host, never the
    content (for secrets, see `galley.host.secrets`)."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"test -f {quoted} || exit 0; stat -c '%a %U %G' -- {quoted}; "
            f"sha256sum -- {quoted} | cut -d ' ' -f 1"
        )

    def process(self, output: list[str]) -> dict[str, str] | None:
        if len(output) < 2:
            return None
        mode, user, group = output[0].split()
        return {"sha256": output[1].strip(), "mode": mode, "user": user, "group": group}


class FileDigests(FactBase):
    """`FileDigest` of each of ``paths`` in one round trip: ``{path: {...} or None}``."""

    def command(self, paths: list[str]) -> str:
        quoted = " ".join(shlex.quote(path) for path in paths)
        return (
            f'for p in {quoted}; do if [ -f "$p" ]; then '
            'printf \'%s\\t%s\\t%s\\n\' "$p" "$(stat -c \'%a %U %G\' -- "$p")" '
            '"$(sha256sum -- "$p" | cut -d \' \' -f 1)"; '
            "else printf '%s\\t-\\n' \"$p\"; fi; done"
        )

    def process(self, output: list[str]) -> dict[str, dict[str, str] | None]:
        found: dict[str, dict[str, str] | None] = {}
        for line in output:
            path, *fields = line.split("\t")
            if len(fields) != 2:
                found[path] = None
                continue
            mode, user, group = fields[0].split()
            found[path] = {"sha256": fields[1], "mode": mode, "user": user, "group": group}
        return found
