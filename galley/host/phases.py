"""Join points that make a multi-component deploy run phase by phase across all hosts.

pyinfra orders operations by a topological sort of each host's own sequence: operations of
different hosts are only ordered by how far down their host's list they are. In
``deploys/cluster.py`` the etcd members' operations and the control plane's would interleave,
so the control plane could start before etcd is up. An operation that every host runs from the
same line has one hash on all of them, so it joins every host's sequence: nothing after it
starts anywhere before everything before it is done everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyinfra import host
from pyinfra.api import operation


@operation()
def phase_done(phase: str) -> Iterator[str]:
    """Wait here until ``phase`` is done on every host (runs nothing on the hosts).

    Call it from the deploy file itself, unconditionally, so every host runs the same one.
    """
    host.noop(f"{phase} is done on every host")
    yield from ()
