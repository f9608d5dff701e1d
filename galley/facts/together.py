"""Several facts read in one round trip: their commands run one after another in one shell,
and each one's output is processed by its own fact, as pyinfra would. For reads across a
fleet (`galley report`): on a busy host each SSH channel costs a login session, far more
than the commands themselves."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.host import Host

_SECTION = "##galley-fact"

Facts = Mapping[str, tuple[type[FactBase], Mapping[str, Any]]]


class FactError(Exception):
    """A fact's command failed, or its output could not be processed."""


def command_of(facts: Facts) -> str:
    """One shell command running each fact's command, each output followed by a line naming
    the fact and its exit status."""
    parts = []
    for key, (cls, arguments) in facts.items():
        command = str(cls().command(**arguments))
        parts.append(
            f"out=$( {{ {command}\n}} 2>/dev/null ); status=$?; "
            f"[ -z \"$out\" ] || printf '%s\\n' \"$out\"; echo '{_SECTION} {key}' $status"
        )
    return "\n".join(parts)


def process(facts: Facts, lines: list[str]) -> dict[str, Any]:
    """Each fact's value from the output of `command_of`: its ``process`` of its own lines
    (its ``default`` when it printed nothing), or a `FactError` when its command failed or
    its output did not parse."""
    found: dict[str, Any] = {}
    section: list[str] = []
    for line in lines:
        if not line.startswith(f"{_SECTION} "):
            section.append(line)
            continue
        key, _, status = line.removeprefix(f"{_SECTION} ").rpartition(" ")
        cls = facts[key][0]
        if status != "0":
            found[key] = FactError(f"{cls.__name__}: command exited {status}")
        else:
            try:
                found[key] = cls().process(section) if section else cls().default()
            except Exception as exc:  # one fact that does not parse must not hide the others
                found[key] = FactError(f"{type(exc).__name__}: {exc}")
        section = []
    for key in facts.keys() - found.keys():
        found[key] = FactError(f"{facts[key][0].__name__}: no output")
    return found


def read_together(host: Host, facts: Facts) -> dict[str, Any]:
    """Read ``facts`` on ``host`` in one round trip: ``{key: value or FactError}``.

    The output travels base64-encoded and is decoded here with invalid UTF-8 replaced: one
    stray byte in a file a fact reads (say /etc/os-release) would otherwise fail the SSH
    read of every fact of the host.
    """
    ok, output = host.run_shell_command(f"{{ {command_of(facts)}\n}} | base64 -w 0")
    if not ok:
        error = FactError(f"reading facts failed: {output.stderr.strip()}")
        return dict.fromkeys(facts, error)
    try:
        raw = base64.b64decode("".join(output.stdout_lines), validate=True)
    except ValueError as exc:
        return dict.fromkeys(facts, FactError(f"reading facts failed: {exc}"))
    return process(facts, raw.decode("utf-8", errors="replace").splitlines())
