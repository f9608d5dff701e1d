"""One operator at a time: a cluster-wide lock held by every deploy and day-2 command.

The lock is a lease in Vault's KV v2 store (``<cluster>/kv/galley/lock``) written with
check-and-set, so two runs that start at the same moment cannot both take it. It records who
holds it (user, machine, process), the command and when it started; the holder renews the
lease every `RENEW_SECONDS` and releases it when the process ends. A holder that died on this
machine (its process is gone, e.g. killed with SIGKILL) is taken over by the next run here,
which then resumes where it stopped; a holder elsewhere leaves a lease that runs out, and the
next run refuses to start, naming it, until an operator breaks it (`galley lock break
INVENTORY`), never silently.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hvac
import hvac.exceptions

from galley.holder import gone, this_run
from galley.text import clean
from galley.vault.client import VaultError, vault_errors, vault_message
from galley.vault.kv import kv_mount

LOCK = "galley/lock"
LEASE_SECONDS = 120
RENEW_SECONDS = 30


class LockError(Exception):
    """The cluster is locked by another run (or the lock cannot be taken); one line."""


def lock_paths(cluster: str) -> dict[str, str]:
    """The Vault path of the lock with the capabilities holding it needs (for policies)."""
    return {f"{kv_mount(cluster)}/data/{LOCK}": "create,read,update"}


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _read(client: hvac.Client, cluster: str) -> tuple[dict, int]:
    """The lock's record ({} when free) and its KV version (0 when never written)."""
    with vault_errors(f"reading the lock of cluster {cluster} failed"):
        try:
            answer = client.secrets.kv.v2.read_secret_version(
                LOCK, mount_point=kv_mount(cluster), raise_on_deleted_version=False
            )
        except hvac.exceptions.InvalidPath:
            return {}, 0
    return answer["data"]["data"] or {}, int(answer["data"]["metadata"]["version"])


def describe(record: dict) -> str:
    """``<holder> running `<command>` since <started> (lease until <expires>)``."""
    return clean(
        f"{record.get('holder')} running `{record.get('command')}` since "
        f"{record.get('started')} (lease until {_stamp(float(record.get('expires', 0)))})"
    )


def _refuse_if_held(cluster: str, current: dict, clock: Callable[[], float]) -> None:
    """LockError naming the holder when ``current`` is held by a run not provably gone."""
    if not current.get("holder") or gone(current):
        return
    if float(current.get("expires", 0)) > clock():
        raise LockError(f"cluster {cluster} is locked by {describe(current)}")
    raise LockError(
        f"cluster {cluster} is locked by {describe(current)}, whose lease ran out: "
        "if that run is gone, `galley lock break INVENTORY`, then run again"
    )


def check_free(client: hvac.Client, cluster: str, clock: Callable[[], float] = time.time) -> None:
    """Refuse (LockError naming the holder) while another run holds the cluster's lock; takes
    nothing. Day-2 commands ask before they read their journal, so a live run is named as
    running, never mistaken for an interrupted one."""
    _refuse_if_held(cluster, _read(client, cluster)[0], clock)


@dataclass
class ClusterLock:
    """A held lock; `renew` extends its lease, `release` frees it."""

    client: hvac.Client
    cluster: str
    record: dict
    version: int
    clock: Callable[[], float] = time.time
    stopped: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def acquire(
        cls,
        client: hvac.Client,
        cluster: str,
        command: str,
        clock: Callable[[], float] = time.time,
    ) -> ClusterLock:
        """Take the lock for ``command`` or raise LockError naming who holds it."""
        current, version = _read(client, cluster)
        _refuse_if_held(cluster, current, clock)
        record = {**this_run(), "command": command[:300], "started": _stamp(clock())}
        lock = cls(client, cluster, record, version, clock)
        lock._write(lambda: "taken by another run at the same moment; run again later")
        return lock

    def _write(self, lost: Callable[[], str]) -> None:
        record = {**self.record, "expires": self.clock() + LEASE_SECONDS}
        try:
            answer = self.client.secrets.kv.v2.create_or_update_secret(
                LOCK, record, cas=self.version, mount_point=kv_mount(self.cluster)
            )
        except hvac.exceptions.InvalidRequest as exc:  # check-and-set: someone else wrote
            raise LockError(
                f"the lock of cluster {self.cluster} was {lost()} (Vault: {vault_message(exc)})"
            ) from exc
        except (hvac.exceptions.VaultError, OSError) as exc:
            raise VaultError(f"writing the lock of cluster {self.cluster} failed: {exc}") from exc
        self.record, self.version = record, int(answer["data"]["version"])

    def renew(self) -> None:
        """Extend the lease (LockError if another run broke the lock meanwhile)."""
        self._write(lambda: "broken by another operator while this run held it")

    def release(self) -> None:
        """Free the lock (a failure is left to the lease to clean up)."""
        self.stopped.set()
        self.record = {"holder": "", "released": _stamp(self.clock())}
        try:
            answer = self.client.secrets.kv.v2.create_or_update_secret(
                LOCK, self.record, cas=self.version, mount_point=kv_mount(self.cluster)
            )
            self.version = int(answer["data"]["version"])
        except (hvac.exceptions.VaultError, OSError):
            pass

    def keep(self) -> ClusterLock:
        """Renew the lease in the background and release it when the process exits."""

        def renew_until_released() -> None:
            while not self.stopped.wait(RENEW_SECONDS):
                try:
                    self.renew()
                except (LockError, VaultError):
                    return

        threading.Thread(target=renew_until_released, name="galley-lock", daemon=True).start()
        atexit.register(self.release)
        return self


def hold(client: hvac.Client, cluster: str) -> ClusterLock:
    """Take the lock for this ``galley`` command (its command line recorded) and keep it until
    the process exits (the day-2 commands' way)."""
    command = " ".join(["galley", *sys.argv[1:]])
    return ClusterLock.acquire(client, cluster, command).keep()


def break_lock(client: hvac.Client, cluster: str, force: bool = False, clock=time.time) -> str:
    """Free a lock whose lease ran out (a live one only with ``force``); what was broken."""
    current, version = _read(client, cluster)
    if not current.get("holder"):
        return f"cluster {cluster} is not locked"
    if float(current.get("expires", 0)) > clock() and not force:
        raise LockError(
            f"cluster {cluster} is locked by {describe(current)} and its lease is live: "
            "break it only if you are sure that run is gone (--force)"
        )
    stale = ClusterLock(client, cluster, current, version, clock)
    stale.release()
    return f"broke the lock of cluster {cluster}: {describe(current)}"
