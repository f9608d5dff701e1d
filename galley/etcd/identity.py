"""Which cluster an etcd (and every snapshot of it) belongs to.

`galley vault bootstrap` makes each cluster a random identity in its KV store (`SECRET`, which
the etcd component declares); the etcd deploy writes it once into etcd under `KEY` as
``galley-cluster-identity:<32 hex digits>``. etcd keeps values as they are in its bbolt file,
so every snapshot of that etcd carries the marker, and a restore tells this cluster's
snapshots from another's by reading it (`markers_in`), before anything stops.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from galley.vault.kv import KvSecret

KEY = "/galley/cluster-identity"
_PREFIX = b"galley-cluster-identity:"
_MARKER = re.compile(re.escape(_PREFIX) + rb"([0-9a-f]{32})")


def new_identity() -> dict[str, str]:
    """A fresh identity, as the KV store keeps it."""
    return {"id": uuid.uuid4().hex}


def marker(identity: str) -> str:
    """The value galley writes under `KEY` for ``identity``."""
    if not re.fullmatch(r"[0-9a-f]{32}", identity):
        raise ValueError(f"not a cluster identity: {identity!r}")
    return (_PREFIX + identity.encode()).decode()


def identity_of(value: str | None) -> str | None:
    """The identity in a value read from `KEY` (None when it is not galley's marker)."""
    found = _MARKER.fullmatch((value or "").encode())
    return found.group(1).decode() if found else None


def markers_in(chunks: Iterable[bytes]) -> set[str]:
    """Every identity marked in a byte stream (a snapshot file read in chunks)."""
    found: set[str] = set()
    overlap = len(_PREFIX) + 32 - 1
    tail = b""
    for chunk in chunks:
        window = tail + chunk
        found.update(match.group(1).decode() for match in _MARKER.finditer(window))
        tail = window[-overlap:]
    return found


# The cluster's identity in its KV store (`galley vault bootstrap` makes it).
SECRET = KvSecret("galley/cluster-identity", new_identity)
