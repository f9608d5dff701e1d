"""`galley etcd snapshot INVENTORY [--out DIR]`: a checked snapshot from a healthy follower,
saved and checked on its own host and copied to the operator (0600, with a ``.sha256`` file
``sha256sum -c`` reads) as ``<cluster>-etcd-r<revision>-<UTC time>.db``; the host's copy is
removed. What a snapshot is and how it is saved: `galley.etcd.snapshot`.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pyinfra.api import Inventory
from pyinfra.api.host import Host

from galley.etcd.client import EtcdClient, EtcdctlError, host_runner
from galley.etcd.group import member_name, wanted
from galley.etcd.plan import Live, Wanted
from galley.etcd.snapshot import (
    HOST_WORK_DIR,
    TIME_FORMAT,
    SnapshotError,
    SnapshotHosts,
    SnapshotStatus,
    checksum_line,
    remote_sha256,
    save_snapshot,
    sha256_file,
    sidecar,
    snapshot_name,
)
from galley.journal import operator_dir
from galley.ops.batches import Batches
from galley.text import clean

SNAPSHOTS = "etcd-snapshots"  # the operator's default directory, in `operator_dir`


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


def snapshot_cli(inventory: Inventory, out: str | None = None) -> int:
    """`galley etcd snapshot`: 0 with a snapshot on this machine, 1 without."""
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
