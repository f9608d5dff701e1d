"""Facts about files galley writes: digest, mode and owner, in one round trip."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase

_DIGESTS_HEADER = "##galley-digests"
_FOLLOWED_HEADER = "##galley-followed"
# find's %y: f file, d directory, l symlink (anything else is "other").
_KINDS = {"f": "file", "d": "directory", "l": "link"}


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


class PathStates(FactBase):
    """What is at each of ``paths``, in one round trip (three commands, however many paths):
    ``{path: {"kind": "file" | "directory" | "link" | "other", "mode": "644",
    "user", "group", "target": link target | None, "mtime": "<seconds.fraction>",
    "followed_mtime": mtime of what a link points at | None, "sha256": digest | None}}``.
    Digests are taken only of ``digests`` (regular files; the content never leaves the
    host). A missing path is left out. From the command line, ``paths`` and ``digests`` are
    space-separated: ``pyinfra INV fact galley.facts.PathStates paths="/etc/etcd /opt/x"``."""

    def command(self, paths: str | Sequence[str], digests: str | Sequence[str] = ()) -> str:
        paths = paths.split() if isinstance(paths, str) else paths
        digests = digests.split() if isinstance(digests, str) else digests
        if not paths:
            return "true"
        quoted = " ".join(shlex.quote(path) for path in paths)
        command = (
            f"find {quoted} -maxdepth 0 -printf '%p\\t%y\\t%m %u %g\\t%T@\\t%l\\n' 2>/dev/null; "
            f"echo '{_FOLLOWED_HEADER}'; find -L {quoted} -maxdepth 0 -printf '%p\\t%T@\\n' "
            "2>/dev/null"
        )
        if digests:
            files = " ".join(shlex.quote(path) for path in digests)
            command += f"; echo '{_DIGESTS_HEADER}'; sha256sum -- {files} 2>/dev/null"
        return command + "; true"

    @staticmethod
    def default() -> dict[str, Any]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        section = "stat"
        for line in output:
            if line in (_FOLLOWED_HEADER, _DIGESTS_HEADER):
                section = line
            elif section == "stat":
                path, kind, owner, mtime, target = line.split("\t")
                mode, user, group = owner.split(" ")
                found[path] = {
                    "kind": _KINDS.get(kind, "other"),
                    "mode": mode,
                    "user": user,
                    "group": group,
                    "target": target if kind == "l" else None,
                    "mtime": mtime,
                    "followed_mtime": None,
                    "sha256": None,
                }
            elif section == _FOLLOWED_HEADER:
                path, _, mtime = line.partition("\t")
                if path in found:
                    found[path]["followed_mtime"] = mtime
            else:
                digest, _, path = line.partition("  ")
                if path in found and found[path]["kind"] == "file":
                    found[path]["sha256"] = digest
        return found
