"""One operator at a time: a cluster-wide lock held by every deploy and day-2 command.

The lock is a lease in Vault's KV v2 store (``<cluster>/kv/galley/lock``) written with
check-and-set, so two runs that start at the same moment cannot both take it. It records who
holds it (user, machine, process, a random run id: `galley.holder`), the command and when it
started. The holder renews the lease four times per ``lock_lease`` and releases it when the
process ends. A run that loses its lease (another wrote the lock, or Vault did not take a
renewal while a quarter of the lease was left) stops at once, before another run may take
it: the next deploy converges what it left, a day-2 command resumes with ``--resume``.

A live lease is never taken over. When its holder died on this machine (killed with SIGKILL,
say), the next run here waits for the lease to run out, then takes it; a holder elsewhere
leaves a lease that runs out and is named until an operator breaks it (`galley lock break
INVENTORY`), which takes the ``<cluster>-lock-break`` policy that no job holds.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hvac
import hvac.exceptions

from galley.holder import gone, this_run
from galley.settings import SPAN, Setting, span_seconds
from galley.text import clean
from galley.vault.client import VaultError, vault_errors, vault_message
from galley.vault.kv import kv_mount

LOCK = "galley/lock"
LEASE = Setting("lock_lease", "2min", SPAN)
DEFAULT_LEASE = float(span_seconds(LEASE.default) or 0)
MIN_LEASE_SECONDS = 8
# How a run that lost its lease ends (its process exits at once).
LOST_EXIT = 4


class LockError(Exception):
    """The cluster is locked by another run (or the lock cannot be taken); one line."""


def lock_paths(cluster: str) -> dict[str, str]:
    """The Vault path of the lock with the capabilities holding it needs (for policies)."""
    return {f"{kv_mount(cluster)}/data/{LOCK}": "create,read,update"}


def break_paths(cluster: str) -> dict[str, str]:
    """What breaking the lock needs: deleting it whole, which no job's policy grants."""
    return {
        f"{kv_mount(cluster)}/data/{LOCK}": "read",
        f"{kv_mount(cluster)}/metadata/{LOCK}": "delete",
    }


def lease_seconds(data: Any) -> float:
    """The lock's lease in seconds from host or group ``data`` (``lock_lease``)."""
    return float(span_seconds(LEASE.of(data)) or DEFAULT_LEASE)


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


def _left_by_the_dead(cluster: str, current: dict, clock: Callable[[], float]) -> float:
    """The seconds left on the lease of a run that is gone from this machine (0 when the lock
    is free or that lease ran out); LockError naming the holder of any other."""
    if not current.get("holder"):
        return 0.0
    left = float(current.get("expires", 0)) - clock()
    if gone(current):
        return max(left, 0.0)
    if left > 0:
        raise LockError(f"cluster {cluster} is locked by {describe(current)}")
    raise LockError(
        f"cluster {cluster} is locked by {describe(current)}, whose lease ran out: "
        "if that run is gone, `galley lock break INVENTORY`, then run again"
    )


def check_free(client: hvac.Client, cluster: str, clock: Callable[[], float] = time.time) -> None:
    """Refuse (LockError naming the holder) while another live run holds the cluster's lock;
    takes nothing. Day-2 commands ask before they read their journal, so a live run is named
    as running, never mistaken for an interrupted one."""
    _left_by_the_dead(cluster, _read(client, cluster)[0], clock)


def _stop_now(message: str) -> None:
    """End this process at once (its lease is lost: another run may take it)."""
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(LOST_EXIT)


@dataclass
class ClusterLock:
    """A held lock; `renew` extends its lease, `release` frees it, `keep` renews it in the
    background and stops the process (``on_lost``) when the lease is lost."""

    client: hvac.Client
    cluster: str
    record: dict
    version: int
    lease: float = DEFAULT_LEASE
    clock: Callable[[], float] = time.time
    on_lost: Callable[[str], None] = _stop_now
    stopped: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def acquire(
        cls,
        client: hvac.Client,
        cluster: str,
        command: str,
        lease: float = DEFAULT_LEASE,
        clock: Callable[[], float] = time.time,
    ) -> ClusterLock:
        """Take the lock for ``command`` or raise LockError naming who holds it. The live
        lease of a run gone from this machine is waited out (a line says so), never taken."""
        current, version = _read(client, cluster)
        while (left := _left_by_the_dead(cluster, current, clock)) > 0:
            print(
                clean(
                    f"galley: waiting {left:.0f} s for the lease of {describe(current)} to run "
                    "out: that run is gone, and a live lease is never taken over"
                ),
                file=sys.stderr,
                flush=True,
            )
            time.sleep(left + 0.5)
            current, version = _read(client, cluster)
        record = {**this_run(), "command": command[:300], "started": _stamp(clock())}
        lock = cls(client, cluster, record, version, lease, clock)
        lock._write(lambda: "taken by another run at the same moment; run again later")
        return lock

    def _write(self, lost: Callable[[], str]) -> None:
        record = {**self.record, "expires": self.clock() + self.lease}
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

    def _renew_in_time(self) -> str | None:
        """Renew the lease, retrying while a quarter of it is left; why it was lost if not."""
        deadline = float(self.record["expires"]) - self.lease / 4
        while True:
            try:
                self.renew()
                return None
            except LockError as exc:
                return str(exc)
            except VaultError as exc:
                if self.clock() >= deadline:
                    return f"its lease could not be renewed in time: {exc}"
            if self.stopped.wait(min(5.0, self.lease / 8)):
                return None

    def keep(self) -> ClusterLock:
        """Renew the lease in the background (four times per lease) and release it when the
        process exits; a lost lease stops the process (``on_lost``) before it runs out."""

        def renew_until_released() -> None:
            while not self.stopped.wait(self.lease / 4):
                lost = self._renew_in_time()
                if lost is not None and not self.stopped.is_set():
                    self.on_lost(
                        clean(
                            f"galley: this run stopped: {lost}; no host is touched once the "
                            "lease may be another run's (run the deploy again, or the day-2 "
                            "command with --resume)"
                        )
                    )
                    return

        threading.Thread(target=renew_until_released, name="galley-lock", daemon=True).start()
        atexit.register(self.release)
        return self


def hold(client: hvac.Client, data: Any) -> ClusterLock:
    """Take the lock of the cluster ``data`` names for this ``galley`` command (its command
    line recorded) and keep it until the process exits (the day-2 commands' way)."""
    command = " ".join(["galley", *sys.argv[1:]])
    return ClusterLock.acquire(client, data.cluster_name, command, lease_seconds(data)).keep()


def break_lock(client: hvac.Client, cluster: str, force: bool = False, clock=time.time) -> str:
    """Delete a lock whose lease ran out (a live one only with ``force``: its run stops at
    its next renewal); what was broken. Needs `break_paths`."""
    current, _ = _read(client, cluster)
    if not current.get("holder"):
        return f"cluster {cluster} is not locked"
    if float(current.get("expires", 0)) > clock() and not force:
        raise LockError(
            f"cluster {cluster} is locked by {describe(current)} and its lease is live: "
            "break it only if you are sure that run is gone (--force)"
        )
    with vault_errors(f"breaking the lock of cluster {cluster} failed"):
        client.secrets.kv.v2.delete_metadata_and_all_versions(LOCK, mount_point=kv_mount(cluster))
    return f"broke the lock of cluster {cluster}: {describe(current)}"
