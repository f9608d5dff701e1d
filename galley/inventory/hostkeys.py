"""SSH host keys pinned per droplet id, so a recreated droplet on a reused address is neither
blocked by its predecessor's key nor a changed key silently trusted.

Each cluster has a directory of pins (GALLEY_KNOWN_HOSTS, default
``~/.config/galley/known_hosts/<cluster>``) holding one known_hosts file per droplet,
``droplet-<id>``. An inventory points each host's ``ssh_known_hosts_file`` at its droplet's file
with ``ssh_strict_host_key_checking = accept-new``:

- a droplet id seen for the first time has an empty file, and pyinfra records the key it is
  offered on the first connection (trust on first use: DigitalOcean hands out no host keys);
- a new droplet on a reused address has a new id, hence a new file: the old key is not in the way;
- for a pinned droplet, `pin` reads the key the host offers now (a key exchange, no login)
  while the inventory loads, before pyinfra connects anywhere, and refuses to go on if it
  changed, naming the droplet and both fingerprints and giving the command that accepts it;
- admission: a droplet in the ``etcd`` or ``control_plane`` group (it receives the cluster's
  secrets) must have its id in the store's ``admitted`` list. One that is not stops the run
  while the inventory loads, named, until the operator admits it with `galley hostkeys accept
  INVENTORY NAME` (which pins the key it offers and admits its id); meanwhile its connections
  check host keys strictly, so no galley command trusts it on first use. Workers keep trust on
  first use. A store without the list (pins made before admission existed) starts it with the
  ids of the etcd and control-plane droplets already pinned.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from pyinfra.api import Inventory
from pyinfra.api.exceptions import InventoryError

from galley.inventory.load import (
    contacting_hosts,
)

ENV = "GALLEY_KNOWN_HOSTS"
# Droplets in these groups receive the cluster's secrets (a monitoring host: an etcd client
# identity for etcd's metrics): a new id there needs admission.
GUARDED_GROUPS = ("etcd", "control_plane", "monitoring")
DEFAULT_ROOT = Path("~/.config/galley/known_hosts")
SCAN_TIMEOUT = 5.0


class HostKeyError(InventoryError):
    """A pinned host key changed or cannot be accepted (pyinfra prints it without a traceback)."""


@dataclass(frozen=True)
class HostKey:
    """One public host key, as in a known_hosts line."""

    type: str
    base64: str

    @property
    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint, as `ssh-keygen -l` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def __str__(self) -> str:
        return f"{self.type} {self.fingerprint}"


@dataclass(frozen=True)
class Target:
    """A droplet to pin: its inventory name, id and the address pyinfra connects to."""

    name: str
    droplet_id: int
    address: str
    port: int = 22


def store_dir(cluster: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The cluster's pins: GALLEY_KNOWN_HOSTS, else ~/.config/galley/known_hosts/<cluster>."""
    configured = environ.get(ENV)
    return Path(configured).expanduser() if configured else (DEFAULT_ROOT / cluster).expanduser()


def pin_file(store: Path, droplet_id: int) -> Path:
    """The known_hosts file holding droplet ``droplet_id``'s keys."""
    return store / f"droplet-{droplet_id}"


def admitted_file(store: Path) -> Path:
    """The list of admitted droplet ids, one per line."""
    return store / "admitted"


def read_admitted(store: Path) -> set[int] | None:
    """The admitted droplet ids; None when the store has no list yet."""
    try:
        text = admitted_file(store).read_text()
    except FileNotFoundError:
        return None
    return {int(line) for line in text.split() if line.isdigit()}


def admit(store: Path, droplet_ids: Iterable[int]) -> None:
    """Add ``droplet_ids`` to the admitted list (created if missing), atomically."""
    ids = (read_admitted(store) or set()) | set(droplet_ids)
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = admitted_file(store).with_name("admitted.tmp")
    tmp.write_text("".join(f"{droplet_id}\n" for droplet_id in sorted(ids)))
    os.replace(tmp, admitted_file(store))


def guarded(groups: Mapping[str, Iterable[tuple[str, Any]]]) -> set[str]:
    """The names of the hosts in `GUARDED_GROUPS` (inventory host entries by group)."""
    return {name for group in GUARDED_GROUPS for name, _ in groups.get(group, ())}


def read_keys(path: Path) -> list[HostKey]:
    """The keys in a known_hosts file (any host name), in order; [] when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    keys = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith(("#", "@")):
            keys.append(HostKey(fields[1], fields[2]))
    return list(dict.fromkeys(keys))


def write_keys(path: Path, address: str, port: int, keys: Iterable[HostKey]) -> None:
    """Replace ``path`` with ``keys`` listed for ``address`` (atomically, private to the user)."""
    host = address if port == 22 else f"[{address}]:{port}"
    text = "".join(f"{host} {key.type} {key.base64}\n" for key in keys)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def scan(
    address: str, port: int = 22, prefer: Iterable[str] = (), timeout: float = SCAN_TIMEOUT
) -> HostKey:
    """The host key ``address`` offers (key exchange only, no login), preferring ``prefer``."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        transport = paramiko.Transport(sock)
        try:
            options = transport.get_security_options()
            first = [t for t in prefer if t in options.key_types]
            options.key_types = first + [t for t in options.key_types if t not in first]
            transport.start_client(timeout=timeout)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
    return HostKey(key.get_name(), key.get_base64())


def targets(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Target]:
    """The droplets among inventory host entries (those whose data has a ``droplet_id``)."""
    found: dict[str, Target] = {}
    for name, data in entries:
        if data.get("droplet_id") is not None:
            address = data.get("ssh_hostname") or name
            found[name] = Target(
                name, int(data["droplet_id"]), address, int(data.get("ssh_port") or 22)
            )
    return list(found.values())


def pin(
    entries: Iterable[tuple[str, dict[str, Any]]],
    store: Path,
    inventory: str,
    guarded_names: Collection[str] = (),
) -> None:
    """Point every droplet's host data at its pin file, then check admission and the keys.

    Pins are re-listed under the droplet's current address. A droplet in ``guarded_names``
    (see `guarded`) whose id is not admitted gets strict host key checking. Unless inside
    `unchecked`, such droplets raise HostKeyError naming each; then every pinned droplet's
    offered key is read concurrently, and a changed one raises HostKeyError naming each such
    droplet (``inventory`` is quoted in the commands to run). Hosts that cannot be reached
    are left to pyinfra to report.
    """
    entries = list(entries)
    found = targets(entries)
    by_name = {target.name: target for target in found}
    pinned: dict[str, list[HostKey]] = {}
    for target in found:
        path = pin_file(store, target.droplet_id)
        keys = read_keys(path)
        write_keys(path, target.address, target.port, keys)
        if keys:
            pinned[target.name] = keys
    admitted = read_admitted(store)
    if admitted is None:  # pins from before admission: those already trusted stay trusted
        admitted = {by_name[n].droplet_id for n in pinned if n in guarded_names}
        admit(store, admitted)
    waiting = [t for t in found if t.name in guarded_names and t.droplet_id not in admitted]
    for name, data in entries:
        if name in by_name:
            data["ssh_known_hosts_file"] = str(pin_file(store, by_name[name].droplet_id))
            data["ssh_strict_host_key_checking"] = (
                "yes" if by_name[name] in waiting else "accept-new"
            )
    if not contacting_hosts():
        return
    if waiting:
        raise HostKeyError(admission_message(waiting, inventory))
    if not pinned:
        return
    with ThreadPoolExecutor(max_workers=min(64, len(pinned))) as pool:
        offered = dict(
            zip(pinned, pool.map(lambda n: _offered(by_name[n], pinned[n]), pinned), strict=True)
        )
    changed = [
        (by_name[name], pinned[name], key)
        for name, key in offered.items()
        if key is not None and key not in pinned[name]
    ]
    if changed:
        raise HostKeyError(changed_message(changed, inventory))


def _offered(target: Target, keys: list[HostKey]) -> HostKey | None:
    try:
        return scan(target.address, target.port, prefer=[key.type for key in keys])
    except (OSError, paramiko.SSHException, EOFError):
        return None


def changed_message(changed: list[tuple[Target, list[HostKey], HostKey]], inventory: str) -> str:
    """What changed for each droplet, and the exact command accepting its new key."""
    lines = [
        f"the SSH host key of {len(changed)} droplet(s) changed since it was pinned; "
        "no host was contacted beyond reading its key:"
    ]
    for target, old, new in changed:
        lines += [
            f"  {target.name} (droplet id {target.droplet_id}, address {target.address}):",
            *(f"    pinned: {key}" for key in old),
            f"    now:    {new}",
            "    if its host keys were regenerated on purpose, accept the new key with:",
            f"      galley hostkeys accept {inventory} {target.name} --fingerprint "
            f"{new.fingerprint}",
        ]
    lines.append("otherwise do not accept it: the connection may be intercepted.")
    return "\n".join(lines)


def admission_message(waiting: list[Target], inventory: str) -> str:
    """Which droplets wait for admission, and the command admitting each."""
    lines = [
        f"{len(waiting)} droplet(s) new to the etcd or control_plane group, not admitted (they "
        "would receive the cluster's secrets); no host was contacted:"
    ]
    for target in waiting:
        lines += [
            f"  {target.name} (droplet id {target.droplet_id}, address {target.address}); if "
            "you created it, admit it with:",
            f"    galley hostkeys accept {inventory} {target.name} [--fingerprint SHA256:...]",
        ]
    lines.append("(--fingerprint: the key its console shows, checked before it is pinned)")
    return "\n".join(lines)


def accept(
    target: Target, path: Path, fingerprint: str | None = None
) -> tuple[list[HostKey], HostKey]:
    """Pin the key ``target`` offers now (only if it has ``fingerprint``) and admit its id
    (the store is the pin file's directory); return (old, new)."""
    old = read_keys(path)
    new = scan(target.address, target.port, prefer=[key.type for key in old])
    if fingerprint is not None and new.fingerprint != fingerprint:
        raise HostKeyError(
            f"{target.name} (droplet id {target.droplet_id}, address {target.address}) now offers "
            f"{new}, not {fingerprint}: nothing was accepted"
        )
    write_keys(path, target.address, target.port, [new])
    admit(path.parent, [target.droplet_id])
    return old, new


def _pins(inventory: Inventory) -> list[tuple[Target, Path]]:
    """The inventory's droplets and their pin files."""
    hosts = [(host.name, host.data.dict()) for host in inventory]
    files = {name: data.get("ssh_known_hosts_file") for name, data in hosts}
    return [(target, Path(files[target.name])) for target in targets(hosts)]


def accept_cli(inventory: Inventory, name: str, fingerprint: str | None = None) -> int:
    """`galley hostkeys accept INVENTORY NAME [--fingerprint F]`: pin NAME's current key."""
    pins = {target.name: (target, path) for target, path in _pins(inventory)}
    if name not in pins:
        known = ", ".join(sorted(pins)) or "none"
        print(f"galley: no droplet {name!r} in the inventory (droplets: {known})", file=sys.stderr)
        return 1
    target, path = pins[name]
    try:
        old, new = accept(target, path, fingerprint)
    except HostKeyError as exc:
        print(f"galley: {exc}", file=sys.stderr)
        return 1
    except (OSError, paramiko.SSHException, EOFError) as exc:
        print(f"galley: cannot read {name}'s host key at {target.address}: {exc}", file=sys.stderr)
        return 1
    was = ", ".join(map(str, old)) or "nothing"
    print(
        f"{name} (droplet id {target.droplet_id}, {target.address}): pinned {new} (was {was}), "
        "admitted"
    )
    return 0


def list_cli(inventory: Inventory) -> int:
    """`galley hostkeys list INVENTORY`: each droplet's id, address and pinned keys."""
    for target, path in _pins(inventory):
        keys = ", ".join(map(str, read_keys(path))) or "not pinned yet"
        print(f"{target.name}  id {target.droplet_id}  {target.address}  {keys}")
    return 0
