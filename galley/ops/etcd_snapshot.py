"""etcd snapshots: the one place galley saves and checks them, names them and copies them to
the operator's machine.

`save_snapshot` (etcdctl ``snapshot save``, then ``etcdutl snapshot status``) is what the
membership executor runs before every change and what ``galley etcd snapshot`` runs; the
members' own timer (`galley.components.etcd`) names its files with the same `snapshot_prefix`
and `TIME_FORMAT`. ``galley etcd snapshot INVENTORY [--out DIR]`` saves one from a healthy
follower on its own host, checks it there, copies it to the operator (0600, with a
``.sha256`` file ``sha256sum -c`` reads) as ``<cluster>-etcd-r<revision>-<UTC time>.db`` and
removes the host's copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pyinfra.api import Inventory
from pyinfra.api.host import Host

from galley.cluster_identity import markers_in
from galley.ops.batches import Batches
from galley.ops.etcd_client import EtcdClient, EtcdctlError, host_runner
from galley.ops.etcd_plan import Live, Wanted
from galley.text import clean

# The UTC time in snapshot names (the members' script formats it with `date` alike).
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# Where a snapshot waits on a member's host before it is copied off (root only, 0700).
HOST_WORK_DIR = "/var/lib/galley/etcd-snapshots"
SNAPSHOTS = "etcd-snapshots"  # the operator's default directory, in `operator_dir`


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
    cluster identities marked in it (`galley.cluster_identity`)."""

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


@dataclass
class Snapshotter:
    """Takes a snapshot from a healthy follower and copies it to the operator's machine.

    ``client_on(name)`` is an `EtcdClient` running on the host ``name``; ``members`` are the
    inventory's members (their names are inventory host names)."""

    hosts: SnapshotHosts
    client_on: Callable[[str], EtcdClient]
    members: Sequence[Wanted]
    cluster: str
    work_dir: str = HOST_WORK_DIR
    log: Callable[[str], None] = print
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def source(self) -> Wanted:
        """The inventory member to snapshot: a healthy follower (the leader if none is)."""
        seeds = [w.client_url for w in self.members]
        client = self.client_on(self.members[0].name)
        try:
            members = client.members(seeds)
            health = client.health(members)
            healthy = [m.client_urls[0] for m in members if health[m.id] is None]
            leaders = client.leaders(healthy) if healthy else frozenset()
        except EtcdctlError as exc:
            raise SnapshotError(f"cannot read the etcd members: {exc}") from None
        ours = {w.name: w for w in self.members}
        live = Live(tuple(m for m in members if m.name in ours), health, leaders)
        chosen = live.snapshot_source()
        if chosen is None:
            raise SnapshotError(f"no healthy etcd member to snapshot: {health}")
        return ours[chosen.name]

    def take(self, out_dir: Path) -> tuple[Path, SnapshotStatus]:
        """Save, check and copy a snapshot into ``out_dir``; the host's copy is removed."""
        source = self.source()
        started = self.now()
        remote = f"{self.work_dir}/operator-{started.strftime(TIME_FORMAT)}.db"
        self.log(f"etcd snapshot: saving from {source.name} ({source.client_url})")
        try:
            status = save_snapshot(self.client_on(source.name), source.client_url, remote)
            self.log(f"etcd snapshot: checked on {source.name}: {status.describe()}")
            digest = remote_sha256(self.hosts, source.name, remote)
            if digest is None:
                raise SnapshotError(f"cannot read the sha256 of {source.name}:{remote}")
            final = out_dir / snapshot_name(self.cluster, status.revision, started)
            with _partial(final) as part:
                self.hosts.get(source.name, remote, part)
                if sha256_file(part) != digest:
                    raise SnapshotError(f"the copy of {source.name}:{remote} differs from it")
        finally:
            self.hosts.run(source.name, f"rm -f {shlex.quote(remote)}")
        sidecar(final).write_text(checksum_line(digest, final))
        self.log(f"etcd snapshot: {final} (sha256 {digest}); removed {source.name}:{remote}")
        return final, status


@contextmanager
def _partial(final: Path) -> Iterator[Path]:
    """A 0600 temporary file beside ``final``, renamed to it on success, removed otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = final.with_name(f".{final.name}.part")
    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        yield part
        os.chmod(part, 0o600)
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)


class PyinfraHosts:
    """`SnapshotHosts` over pyinfra hosts by name (etcd members by member name), all
    connected at once through `Batches.connected`: an unreachable host stops everything
    before any change."""

    def __init__(self, inventory: Inventory, hosts: Mapping[str, Host]) -> None:
        self.inventory = inventory
        self.hosts = dict(hosts)
        self._connection = ExitStack()

    def connect(self) -> None:
        """Connect to every host (SnapshotError naming each that cannot be reached)."""
        names = [host.name for host in self.hosts.values()]
        found = self._connection.enter_context(Batches(self.inventory).connected(names))
        if found.errors:
            why = "; ".join(f"{name}: {error}" for name, error in sorted(found.errors.items()))
            raise SnapshotError(f"cannot reach every host ({why})")

    def close(self) -> None:
        """Disconnect from every host."""
        self._connection.close()

    def client_on(self, name: str) -> EtcdClient:
        """An `EtcdClient` running on ``name`` (galley's host layout)."""
        return EtcdClient(host_runner(self.hosts[name]))

    def run(self, name: str, command: str) -> tuple[bool, str, str]:
        return host_runner(self.hosts[name])(command)

    def get(self, name: str, remote: str, local: Path) -> None:
        with local.open("wb") as handle:
            if not self.hosts[name].get_file(remote, handle):
                raise SnapshotError(f"copying {name}:{remote} failed")

    def put(self, name: str, local: Path, remote: str) -> None:
        directory = shlex.quote(remote.rsplit("/", 1)[0] or "/")
        self.run(name, f"umask 077 && mkdir -p {directory}")
        with local.open("rb") as handle:
            if not self.hosts[name].put_file(handle, remote):
                raise SnapshotError(f"copying {local} to {name}:{remote} failed")
        self.run(name, f"chmod 600 {shlex.quote(remote)}")


def operator_snapshot(
    inventory: Inventory, out: str | None = None, log: Callable[[str], None] = print
) -> tuple[Path, SnapshotStatus]:
    """Take a checked snapshot of the inventory's etcd cluster from a healthy follower and
    copy it into ``out`` (default: the operator's directory); SnapshotError when it cannot."""
    from galley.components.etcd import member_name, wanted
    from galley.ops.journal import operator_dir

    hosts_of = list(inventory.get_group("etcd", []))
    if not hosts_of:
        raise SnapshotError("the inventory has no etcd group")
    data = hosts_of[0].data
    out_dir = Path(out).expanduser() if out else operator_dir(data) / SNAPSHOTS
    hosts = PyinfraHosts(inventory, {member_name(h): h for h in hosts_of})
    try:
        hosts.connect()
        chosen = [wanted(h) for h in hosts_of]
        return Snapshotter(hosts, hosts.client_on, chosen, data.cluster_name, log=log).take(out_dir)
    finally:
        hosts.close()


def snapshot_cli(inventory_path: str, out: str | None = None) -> int:
    """`galley etcd snapshot`: 0 with a snapshot on this machine, 1 without, 2 if unloadable."""
    from galley.inventory.load import InventoryLoadError, load_inventory

    try:
        inventory = load_inventory(inventory_path)
    except InventoryLoadError as exc:
        print(f"galley: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("pyinfra").addHandler(logging.StreamHandler(sys.stderr))
    try:
        path, status = operator_snapshot(inventory, out, log=_say)
    except SnapshotError as exc:
        print(f"galley: etcd snapshot: {clean(str(exc))}", file=sys.stderr)
        return 1
    print(f"{path}: {status.describe()}")
    return 0


def _say(line: str) -> None:
    print(clean(line), flush=True)
