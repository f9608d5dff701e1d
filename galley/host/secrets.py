"""Files that hold secrets (the service-account key, the encryption key): written so that no
pyinfra output shows them, whatever the flags.

`files.put` and `files.template` print the old and new content with ``--diff`` (and ``--dry
--diff``); a secret must never reach a terminal or a CI log. `secret_file` compares the
remote file's sha256, mode and owner with the wanted ones while preparing, and at execution
uploads the content into a temporary file created 0600 beside the target, then moves it in
place. The content travels wrapped in `Secret`, whose repr never shows it.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FunctionCommand, operation
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State

from galley.facts.files import FileDigest
from galley.host import observed


class SecretFileError(Exception):
    """Writing a secret file failed (its previous content is left in place)."""


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


def _run(target: Host, command: str, doing: str) -> None:
    ok, output = target.run_shell_command(command)
    if not ok:
        raise SecretFileError(f"{target.name}: {doing} failed: {output.stderr.strip()}")


def _write(state: State, host: Host, path: str, secret: Secret, mode: str, owner: str) -> None:
    """At execution: upload into a 0600 temporary file, set mode and owner, move in place."""
    tmp = shlex.quote(f"{path}.galley-new")
    _run(host, f"rm -f {tmp} && install -m 600 /dev/null {tmp}", f"preparing {path}")
    if not host.put_file(io.BytesIO(secret.text.encode()), f"{path}.galley-new"):
        raise SecretFileError(f"{host.name}: uploading {path} failed")
    _run(
        host,
        f"chown {shlex.quote(owner)} {tmp} && chmod {shlex.quote(mode)} {tmp} && "
        f"mv -f {tmp} {shlex.quote(path)}",
        f"installing {path}",
    )


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
) -> Iterator[FunctionCommand]:
    """Keep ``path`` holding exactly ``secret`` with ``mode`` and owner; the directory must
    exist. Changes are listed (by path) but never shown, not even with ``--diff``."""
    have = host.get_fact(FileDigest, path=path)
    want = {"sha256": secret.sha256, "mode": mode, "user": user, "group": group}
    if have == want:
        host.noop(f"{path} is up to date")
        return
    if posixpath.dirname(path) == "":
        raise ValueError(f"secret_file needs an absolute path, not {path!r}")
    yield FunctionCommand(_write, (), {"path": path, "secret": secret, "mode": mode,
                                       "owner": f"{user}:{group}"})  # fmt: skip
