"""What galley manages on a host, read in one round trip: paths, systemd units, keys and
certificates (see `galley.host.observed`, which reads it once per host and run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyinfra.api import FactBase

from galley.facts.files import PathStates
from galley.facts.system import UnitStates
from galley.facts.tls import TlsFiles

_SECTION = "##galley-section"


class ManagedState(FactBase):
    """``{"paths": PathStates, "units": UnitStates, "tls": TlsFiles}`` of the given paths
    (``digests``: those whose sha256 is wanted), units, private keys and certificates."""

    def command(
        self,
        paths: Sequence[str],
        digests: Sequence[str],
        units: Sequence[str],
        keys: Sequence[str],
        certs: Sequence[str],
    ) -> str:
        parts = [
            PathStates().command(paths, digests),
            UnitStates().command(tuple(units)) if units else "true",
            TlsFiles().command(keys, certs),
        ]
        return f"; echo '{_SECTION}'; ".join(f"{{ {part}; }}" for part in parts)

    @staticmethod
    def default() -> dict[str, Any]:
        return {"paths": {}, "units": {}, "tls": {"keys": {}, "certs": {}}}

    def process(self, output: list[str]) -> dict[str, Any]:
        sections: list[list[str]] = [[]]
        for line in output:
            if line == _SECTION:
                sections.append([])
            else:
                sections[-1].append(line)
        paths, units, tls = sections
        return {
            "paths": PathStates().process(paths),
            "units": UnitStates().process(units),
            "tls": TlsFiles().process(tls),
        }
