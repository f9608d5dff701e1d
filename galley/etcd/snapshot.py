"""etcd snapshots: how galley saves and checks them, names them, and reads a snapshot file
(its integrity, the cluster it is of).

`save_snapshot` (etcdctl ``snapshot save``, then ``etcdutl snapshot status``) is what the
membership executor runs before every change and what ``galley etcd snapshot`` runs
(`galley.ops.etcd_snapshot`); the members' own timer (`galley.components.etcd`) names its
files with the same `snapshot_prefix` and `TIME_FORMAT`.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from galley.etcd.client import EtcdClient, EtcdctlError
from galley.etcd.identity import markers_in

# The UTC time in snapshot names (the members' script formats it with `date` alike).
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# Where a snapshot waits on a member's host before it is copied off (root only, 0700).
HOST_WORK_DIR = "/var/lib/galley/etcd-snapshots"


class SnapshotError(Exception):
    """No good snapshot (one line; nothing was changed)."""


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdutl snapshot status -w json`` reads from a snapshot file."""

    hash: int
    revision: int
    total_keys: int
    total_size: int

    @classmethod
    def from_json(cls, data: Any) -> SnapshotStatus:
        """From etcdutl's JSON; SnapshotError when it does not describe a good snapshot."""
        try:
            status = cls(
                int(data["hash"]),
                int(data["revision"]),
                int(data["totalKey"]),
                int(data["totalSize"]),
            )
        except (KeyError, TypeError, ValueError):
            raise SnapshotError(f"etcdutl snapshot status answered {data!r}") from None
        if not status.hash or not status.total_size:
            raise SnapshotError(f"not a good snapshot: etcdutl snapshot status reads {data!r}")
        return status

    def describe(self) -> str:
        """One line: revision, keys, size."""
        return f"revision {self.revision}, {self.total_keys} keys, {self.total_size} bytes"


def snapshot_prefix(cluster: str) -> str:
    """The start of every snapshot name of ``cluster``."""
    return f"{cluster}-etcd"


def snapshot_name(cluster: str, revision: int, when: datetime) -> str:
    """``<cluster>-etcd-r<revision>-<UTC time>.db``: ``lab-etcd-r12345-20261130T180000Z.db``."""
    return f"{snapshot_prefix(cluster)}-r{revision}-{when.astimezone(UTC).strftime(TIME_FORMAT)}.db"


def save_snapshot(client: EtcdClient, endpoint: str, path: str) -> SnapshotStatus:
    """Save a snapshot of ``endpoint`` at ``path`` where ``client`` runs (0600) and check it
    with ``etcdutl snapshot status``; SnapshotError without a good one."""
    try:
        return SnapshotStatus.from_json(client.snapshot(endpoint, path))
    except (EtcdctlError, ValueError) as exc:
        raise SnapshotError(str(exc)) from None


def sha256_file(path: Path) -> str:
    """The sha256 of a local file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SnapshotFile:
    """What reading a snapshot file once tells: its sha256, whether its content matches the
    sha256 etcdctl appended when it saved it (None: there is none at its end), and the
    cluster identities marked in it (`galley.etcd.identity`)."""

    sha256: str
    intact: bool | None
    identities: frozenset[str]


# etcd appends the sha256 of a saved snapshot to it: a file of 512-byte pages plus 32 bytes.
_PAGE, _HASH = 512, 32


def read_snapshot_file(path: Path) -> SnapshotFile:
    """Read ``path`` once: its sha256, its integrity (as `etcdutl snapshot restore` checks
    it) and the cluster identities it carries."""
    whole, content = hashlib.sha256(), hashlib.sha256()
    size = path.stat().st_size
    with_hash = size % _PAGE == _HASH
    content_size = size - _HASH if with_hash else size
    tail = b""

    def chunks() -> Iterator[bytes]:
        nonlocal tail
        done = 0
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                whole.update(block)
                kept = block[: max(0, content_size - done)]
                content.update(kept)
                tail += block[len(kept) :]
                done += len(block)
                yield block

    identities = frozenset(markers_in(chunks()))
    intact = content.digest() == tail if with_hash else None
    return SnapshotFile(whole.hexdigest(), intact, identities)


def checksum_line(digest: str, path: Path) -> str:
    """The ``.sha256`` file's line, as ``sha256sum`` writes it (``sha256sum -c`` reads it)."""
    return f"{digest}  {path.name}\n"


def sidecar(path: Path) -> Path:
    """The ``.sha256`` file beside a snapshot."""
    return path.with_name(path.name + ".sha256")


class SnapshotHosts(Protocol):
    """Shell commands and file copies on the hosts of a cluster, by inventory name."""

    def run(self, name: str, command: str) -> tuple[bool, str, str]:
        """Run ``command`` on the host: (ok, stdout, stderr)."""
        ...

    def get(self, name: str, remote: str, local: Path) -> None:
        """Copy the host's ``remote`` file to ``local`` (created 0600)."""
        ...

    def put(self, name: str, local: Path, remote: str) -> None:
        """Copy ``local`` to the host's ``remote`` (0600)."""
        ...


def remote_sha256(hosts: SnapshotHosts, name: str, path: str) -> str | None:
    """The sha256 of a file on a host, None when it is missing or unreadable."""
    ok, out, _ = hosts.run(name, f"sha256sum {shlex.quote(path)} 2>/dev/null")
    return out.split()[0] if ok and out.split() else None
