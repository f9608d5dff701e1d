"""What galley manages on a host, read in one round trip: paths, systemd units, keys and
certificates, and the facts components read (see `galley.host.observed`, which reads it once
per host and run)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase

from galley.facts.files import PathStates
from galley.facts.system import UnitStates
from galley.facts.tls import TlsFiles

_SECTION = "##galley-section"
_FACT = "##galley-fact "


def fact_name(fact: type[FactBase]) -> str:
    """How `ManagedState` names a fact class (``module:Class``)."""
    return f"{fact.__module__}:{fact.__name__}"


def _fact(name: str) -> FactBase:
    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(module), cls)()


class ManagedState(FactBase):
    """``{"paths": PathStates, "units": UnitStates, "tls": TlsFiles, "facts": {...}}`` of the
    given paths (``digests``: those whose sha256 is wanted), units, private keys and
    certificates, and ``facts`` (`fact_name`s of argument-free facts) by name."""

    def command(
        self,
        paths: Sequence[str],
        digests: Sequence[str],
        units: Sequence[str],
        keys: Sequence[str],
        certs: Sequence[str],
        facts: Sequence[str] = (),
    ) -> str:
        parts = [
            PathStates().command(paths, digests),
            UnitStates().command(tuple(units)) if units else "true",
            TlsFiles().command(keys, certs),
        ]
        parts += [f"echo '{_FACT}{name}'; {_fact(name).command()}" for name in facts]
        return f"; echo '{_SECTION}'; ".join(f"{{ {part}; }}" for part in parts)

    @staticmethod
    def default() -> dict[str, Any]:
        return {"paths": {}, "units": {}, "tls": {"keys": {}, "certs": {}}, "facts": {}}

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: list[list[str]] = [[]]
        for line in output:
            if line == _SECTION:
                sections.append([])
            else:
                sections[-1].append(line)
        paths, units, tls, *facts = sections
        return {
            "paths": PathStates().process(paths),
            "units": UnitStates().process(units),
            "tls": TlsFiles().process(tls),
            "facts": {
                lines[0].removeprefix(_FACT): _fact(lines[0].removeprefix(_FACT)).process(lines[1:])
                for lines in facts
                if lines and lines[0].startswith(_FACT)
            },
        }
