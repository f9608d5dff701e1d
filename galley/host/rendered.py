"""Files galley renders whole, read once per host while preparing: a file already as declared
gets no operation at all. (pyinfra reads a file's stat and digest for each `files.template`,
while preparing and again while executing: on a converged host, most of a run's round trips.)"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from weakref import WeakKeyDictionary

from pyinfra import host, state
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.connectors.util import CommandOutput

from galley.components.model import Config
from galley.facts.files import FileDigests

# Per pyinfra State (a run), per host name: what `read_rendered` found.
_FOUND: WeakKeyDictionary[State, dict[str, dict]] = WeakKeyDictionary()


def read_rendered(paths: Iterable[str]) -> None:
    """Read digest, mode and owner of ``paths`` on the current host in one round trip."""
    found = host.get_fact(FileDigests, paths=sorted(set(paths)))
    _FOUND.setdefault(state, {})[host.name] = found


def unchanged(config: Config, content: str) -> OperationMeta | None:
    """A finished, unchanged result for ``config`` when `read_rendered` found its file on the
    current host holding ``content`` with the declared mode and owner; else None (write it).
    Only while preparing: an operation added while executing reads the host itself."""
    if state.is_executing:
        return None
    have = _FOUND.get(state, {}).get(host.name, {}).get(config.path)
    if not have or have["sha256"] != hashlib.sha256(content.encode()).hexdigest():
        return None
    if (have["user"], have["group"]) != (config.owner, config.group):
        return None
    if int(have["mode"], 8) != int(config.mode, 8):
        return None
    result = OperationMeta(f"unchanged {config.path}", is_change=False)
    result.set_complete(True, [], CommandOutput([]))
    return result
