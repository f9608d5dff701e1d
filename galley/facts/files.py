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
