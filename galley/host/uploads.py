"""Files galley writes on a host: each lands whole, with its owner and mode, in one round trip.

The content goes into a temporary file beside the target (created 0600 first when the target
is not readable by everyone), gets its owner and mode, and is moved over the target: no reader
sees a half-written file, nor a private one readable for a moment. pyinfra's `files.put`
uploads straight onto the target and then runs chown and chmod, after reading the file,
whether it is a directory, and its parent directory: five round trips for a new file, which at
fleet scale were the largest share of a first converge's commands. `keep_file` decides from
what was read while preparing (`galley.host.observed`) and needs none of those reads.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Iterator

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.api.command import PyinfraCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.facts.files import FileContents
from pyinfra.operations import files
from pyinfra.operations.util.files import generate_color_diff

from galley.host import observed

TEMP_SUFFIX = ".galley-new"


class UploadError(Exception):
    """Putting a file on a host failed (its previous content is left in place)."""


def install_commands(
    path: str, data: bytes, owner: str, group: str, mode: str
) -> list[PyinfraCommand]:
    """The commands that put ``data`` at ``path`` with this owner and mode (see the module)."""
    temp = path + TEMP_SUFFIX
    quoted = shlex.quote(temp)
    commands: list[PyinfraCommand] = []
    if int(mode, 8) & 0o044 != 0o044:  # not readable by everyone: private from the start
        commands.append(StringCommand(f"rm -f {quoted} && install -m 600 /dev/null {quoted}"))
    commands.append(FileUploadCommand(io.BytesIO(data), temp))
    commands.append(
        StringCommand(
            f"{_owner_and_mode(temp, owner, group, mode)} && mv -f {quoted} {shlex.quote(path)}"
        )
    )
    return commands


def _owner_and_mode(path: str, owner: str, group: str, mode: str) -> str:
    """The command that gives ``path`` this owner and mode."""
    quoted = shlex.quote(path)
    return f"chown {shlex.quote(f'{owner}:{group}')} {quoted} && chmod {shlex.quote(mode)} {quoted}"


def install(
    state: State, host: Host, path: str, data: bytes, owner: str, group: str, mode: str
) -> None:
    """Run `install_commands` now (inside an operation that is executing); raises
    UploadError naming the path when one fails."""
    for command in install_commands(path, data, owner, group, mode):
        result = command.execute(state, host, {})
        ok, stderr = (result, "") if isinstance(result, bool) else (result[0], result[1].stderr)
        if not ok:
            raise UploadError(f"{host.name}: installing {path} failed: {stderr.strip()}".strip())


def keep_file(
    name: str, path: str, text: str, owner: str = "root", group: str = "root", mode: str = "644"
) -> OperationMeta:
    """Keep ``path`` holding ``text`` with this owner and mode.

    What the host had when the run began (`galley.host.observed`) decides: nothing to do is a
    settled result (no operation); content already written there by an earlier operation of
    this run is that operation (so a unit watching the file restarts once, after it); a file
    whose content is right gets only its owner and mode set. A path that was not read gets
    pyinfra's `files.put`, which reads the host itself."""
    if observed.file_is(path, text, owner, group, mode):
        return observed.settled(name)
    if not observed.was_read(path):
        return files.put(
            name=name, src=io.StringIO(text), dest=path, user=owner, group=group, mode=mode
        )
    wanted = (hashlib.sha256(text.encode()).hexdigest(), owner, group, int(mode, 8))
    earlier = observed.planned_write(path, wanted)
    if earlier is not None:
        return earlier
    content = not observed.file_is(path, text)
    operation = _put(
        name=name, path=path, text=text, owner=owner, group=group, mode=mode, content=content
    )
    if not content:
        observed.attributes_only(operation)
    observed.plan_write(path, wanted, operation)
    return operation


@operation()
def _put(
    path: str, text: str, owner: str, group: str, mode: str, content: bool
) -> Iterator[PyinfraCommand | str]:
    if not content:
        yield _owner_and_mode(path, owner, group, mode)
        return
    if state.config.DIFF:
        old = host.get_fact(FileContents, path=path) or []
        host.log(f"Will {'modify' if old else 'create'} {path}", logger.info)
        for line in generate_color_diff(
            [line + "\n" for line in old], text.splitlines(keepends=True)
        ):
            logger.info("  %s", line)
    yield from install_commands(path, text.encode(), owner, group, mode)
