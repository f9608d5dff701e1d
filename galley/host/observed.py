"""What galley manages on each host, read once per run while preparing, so that whatever is
already as declared gets no operation at all.

pyinfra 3.10 caches no facts: each operation reads its own (a file's stat and digest, a
unit's state, a link's target) while preparing and again while executing, and each operation
costs the controller CPU however little it does. A converged host was most of a run's round
trips and CPU. Here each host's deploy first reads `ManagedState` (what the host's components
list in a `Wanted`) in one round trip, and then asks it: a directory, file, link, release,
running unit or restart check already as declared is settled (a finished, unchanged
`OperationMeta`), anything else gets its operation as before. Only while preparing: an
operation added while executing reads the host itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary, WeakSet

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.connectors.util import CommandOutput
from pyinfra.context import ctx_state

from galley.facts.managed import ManagedState, fact_name
from galley.facts.system import mtime_us, restart_pending


@dataclass
class Wanted:
    """What a host's deploy decides on: ``paths`` to stat (``digests``: also hash), systemd
    ``units``, private ``keys`` and ``certs``, and argument-free ``facts`` (`fact_name`s; see
    `ManagedState`)."""

    paths: set[str] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    certs: set[str] = field(default_factory=set)
    facts: set[str] = field(default_factory=set)

    def files(self, paths: Iterable[str]) -> None:
        """Add ``paths`` whose content is compared (stat and digest)."""
        for path in paths:
            self.paths.add(path)
            self.digests.add(path)

    def update(self, other: Wanted) -> None:
        """Add everything ``other`` wants."""
        for name in ("paths", "digests", "units", "keys", "certs", "facts"):
            getattr(self, name).update(getattr(other, name))


@dataclass(frozen=True)
class _Observation:
    wanted: Wanted
    found: Mapping[str, Any]
    # Files this run's operations write, by path: what they write and the operation.
    writes: dict[str, tuple[tuple, OperationMeta]] = field(default_factory=dict)


# Per pyinfra State (a run): each host's observation, by host name.
_RUNS: WeakKeyDictionary[State, dict[str, _Observation]] = WeakKeyDictionary()
# Operations that set a file's mode or owner but leave its content (and mtime) as it is.
_ATTRIBUTES_ONLY: WeakSet[OperationMeta] = WeakSet()


def observe(wanted: Wanted) -> None:
    """Read `ManagedState` of ``wanted`` on the current host (pyinfra prepares the hosts in
    parallel, so every host's read is in flight at once)."""
    if state.is_executing:
        return
    found = host.get_fact(
        ManagedState,
        paths=sorted(wanted.paths),
        digests=sorted(wanted.digests),
        units=sorted(wanted.units),
        keys=sorted(wanted.keys),
        certs=sorted(wanted.certs),
        facts=sorted(wanted.facts),
    )
    _RUNS.setdefault(ctx_state.get(), {})[host.name] = _Observation(wanted, found)


def fact(cls: type[FactBase]) -> Any:
    """The fact ``cls`` (argument-free) on this host: as read with the managed state while
    preparing when it was wanted (`Wanted.facts`), else read now."""
    mine = _mine()
    name = fact_name(cls)
    if mine is not None and name in mine.wanted.facts:
        return mine.found["facts"].get(name)
    return host.get_fact(cls)


def _mine() -> _Observation | None:
    if state.is_executing:
        return None
    return _RUNS.get(ctx_state.get(), {}).get(host.name)


def _path(path: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether ``path`` was read on this host, what is there: None when missing)."""
    mine = _mine()
    if mine is None or path not in mine.wanted.paths:
        return False, None
    return True, mine.found["paths"].get(path)


def was_read(path: str) -> bool:
    """Whether ``path`` on this host was read while preparing (whatever is there)."""
    return _path(path)[0]


def _attributes(
    have: dict[str, Any], owner: str | None, group: str | None, mode: str | None
) -> bool:
    return mode in (None, have["mode"]) or (
        int(have["mode"], 8) == int(str(mode), 8)
        and owner in (None, have["user"])
        and group in (None, have["group"])
    )


def file_is(
    path: str,
    content: str | bytes,
    owner: str | None = None,
    group: str | None = None,
    mode: str | None = None,
) -> bool:
    """Whether this host's file at ``path`` holds ``content`` (and has this mode and owner,
    where given)."""
    seen, have = _path(path)
    if not seen or have is None or have["kind"] != "file":
        return False
    data = content.encode() if isinstance(content, str) else content
    return have["sha256"] == hashlib.sha256(data).hexdigest() and _attributes(
        have, owner, group, mode
    )


def planned_write(path: str, wanted: tuple) -> OperationMeta | None:
    """The operation of this run, added earlier on this host, that writes ``wanted`` (what a
    caller compares: content digest, owner, mode) to ``path``; None when there is none."""
    mine = _mine()
    earlier = mine.writes.get(path) if mine is not None else None
    return earlier[1] if earlier is not None and earlier[0] == wanted else None


def plan_write(path: str, wanted: tuple, operation: OperationMeta) -> None:
    """Record that ``operation`` writes ``wanted`` to ``path`` (see `planned_write`)."""
    mine = _mine()
    if mine is not None:
        mine.writes[path] = (wanted, operation)


def attributes_only(operation: OperationMeta) -> OperationMeta:
    """Mark ``operation`` as setting only a file's mode or owner (see `changes_content`)."""
    _ATTRIBUTES_ONLY.add(operation)
    return operation


def changes_content(operation: OperationMeta) -> bool:
    """Whether ``operation`` may change what a unit reads: not one that only sets a mode or
    owner (which leaves the modification time, and so `galley.facts.PendingRestart`, as it
    is: a restart check that counted it would list a restart ``--dry`` that never comes)."""
    return operation not in _ATTRIBUTES_ONLY


def directory_is(path: str, owner: str | None, group: str | None, mode: str) -> bool:
    """Whether this host has a directory at ``path`` with this mode and owner."""
    seen, have = _path(path)
    return (
        seen
        and have is not None
        and have["kind"] == "directory"
        and _attributes(have, owner, group, mode)
    )


def links_are(targets: Mapping[str, str]) -> bool:
    """Whether each of ``targets``' paths is a symlink to its target on this host."""
    return stale_links(targets) == []


def stale_links(targets: Mapping[str, str]) -> list[str] | None:
    """Those of ``targets``' paths that are not a symlink to their target on this host; None
    when not all of them were read."""
    stale = []
    for path, target in targets.items():
        seen, have = _path(path)
        if not seen:
            return None
        if have is None or have["target"] != target:
            stale.append(path)
    return stale


def _unit(unit: str) -> dict[str, Any] | None:
    """What was read of systemd ``unit`` on this host (`UnitStates`), None when not read."""
    mine = _mine()
    if mine is None or unit not in mine.wanted.units:
        return None
    return mine.found["units"].get(unit)


def unit_was_read(unit: str) -> bool:
    """Whether systemd ``unit`` on this host was read while preparing."""
    return _unit(unit) is not None


def unit_active(unit: str) -> bool:
    """Whether systemd ``unit`` is active on this host."""
    found = _unit(unit)
    return bool(found) and found["active"] == "active"


def unit_enabled(unit: str) -> bool:
    """Whether systemd ``unit`` is enabled on this host."""
    found = _unit(unit)
    return bool(found) and found["enabled"]


def unit_masked(unit: str) -> bool:
    """Whether systemd ``unit`` is masked and not active on this host."""
    found = _unit(unit)
    return bool(found) and found["load"] == "masked" and found["active"] != "active"


def restart_due(unit: str, paths: Iterable[str], stamp: str | None = None) -> bool | None:
    """`galley.facts.PendingRestart` from the observation: None when not everything it needs
    was read."""
    mine = _mine()
    paths = list(paths) + ([stamp] if stamp else [])
    if mine is None or unit not in mine.wanted.units:
        return None
    if any(path not in mine.wanted.paths for path in paths):
        return None
    found = mine.found["paths"]
    mtimes = [
        mtime_us(value)
        for path in paths
        if path != stamp and path in found
        for value in (found[path]["mtime"], found[path]["followed_mtime"])
        if value
    ]
    stamped = mtime_us(found[stamp]["mtime"]) if stamp and stamp in found else None
    return restart_pending(mine.found["units"][unit], stamped, mtimes)


def tls_files(keys: Iterable[str], certs: Iterable[str]) -> dict[str, dict] | None:
    """`galley.facts.TlsFiles` of ``keys`` and ``certs`` from the observation, or None."""
    mine = _mine()
    keys, certs = list(keys), list(certs)
    if mine is None or not (set(keys) <= mine.wanted.keys and set(certs) <= mine.wanted.certs):
        return None
    tls = mine.found["tls"]
    return {
        "keys": {path: tls["keys"].get(path) for path in keys},
        "certs": {path: tls["certs"].get(path) for path in certs},
    }


def settled(name: str) -> OperationMeta:
    """A finished, unchanged result standing for the operation ``name`` needs not run."""
    result = OperationMeta(f"settled {name}", is_change=False)
    result.set_complete(True, [], CommandOutput([]))
    return result


def is_settled(operation: OperationMeta) -> bool:
    """Whether ``operation`` was settled while preparing (finished, nothing changed)."""
    return not state.is_executing and operation.is_complete() and not operation.did_change()
