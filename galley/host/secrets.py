"""Files that hold secrets (the service-account key, the encryption key): written so that no
pyinfra output shows them, whatever the flags.

`files.put` and `files.template` print the old and new content with ``--diff`` (and ``--dry
--diff``); a secret must never reach a terminal or a CI log. `secret_file` compares the
remote file's sha256, mode and owner with the wanted ones while preparing, and at execution
puts the content in place as `galley.host.uploads` does (through a temporary file created
0600 beside the target). The content travels wrapped in `Secret`, whose repr never shows it.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.operation import OperationMeta

from galley.facts.files import FileDigest
from galley.host import observed
from galley.host.uploads import install_commands


@dataclass(frozen=True)
class Secret:
    """Secret text; ``repr`` and ``str`` show only its length and digest prefix."""

    text: str = field(repr=False)

    @property
    def sha256(self) -> str:
        """The digest the remote file is compared with."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def __str__(self) -> str:
        return f"<secret, {len(self.text)} characters, sha256 {self.sha256[:12]}...>"

    __repr__ = __str__


def keep_secret(
    name: str, path: str, secret: Secret, mode: str = "600", user: str = "root", group: str = "root"
) -> OperationMeta:
    """`secret_file`, settled without an operation when the host's file, read while
    preparing (`galley.host.observed`), already holds ``secret`` with this mode and owner."""
    if observed.file_is(path, secret.text, user, group, mode):
        return observed.settled(name)
    return secret_file(name=name, path=path, secret=secret, mode=mode, user=user, group=group)


@operation()
def secret_file(
    path: str, secret: Secret, mode: str = "600", user: str = "root", group: str = "root"
) -> Iterator[PyinfraCommand]:
    """Keep ``path`` holding exactly ``secret`` with ``mode`` and owner; the directory must
    exist. Changes are listed (by path) but never shown, not even with ``--diff``."""
    have = host.get_fact(FileDigest, path=path)
    want = {"sha256": secret.sha256, "mode": mode, "user": user, "group": group}
    if have == want:
        host.noop(f"{path} is up to date")
        return
    if posixpath.dirname(path) == "":
        raise ValueError(f"secret_file needs an absolute path, not {path!r}")
    yield from install_commands(path, secret.text.encode(), user, group, mode)
