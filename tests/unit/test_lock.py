"""The cluster-wide lock against a real OpenBao: one holder, named to the others; a live lease
is never taken over (a dead holder's is waited out, another machine's is named even when it
shares this hostname); a run that loses its lease stops at once; breaking a lock takes a
policy no job holds; check-and-set settles a race."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import hvac
import pytest

from galley.holder import machine_id
from galley.lock import (
    LOCK,
    LOST_EXIT,
    ClusterLock,
    LockError,
    break_lock,
    check_free,
)
from galley.ops import vault_bootstrap
from galley.vault.client import VaultError
from tests.unit.test_vault_privilege import token_client


@pytest.fixture
def kv(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    return vault


def _written(kv: hvac.Client, record: dict) -> None:
    """Write ``record`` as the lock's holder, as another run would have."""
    version = kv.secrets.kv.v2.read_secret_metadata(LOCK, mount_point="lab/kv")["data"]
    kv.secrets.kv.v2.create_or_update_secret(
        LOCK, record, cas=int(version["current_version"]), mount_point="lab/kv"
    )


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_one_holder_at_a_time_and_the_others_are_told_who(kv):
    first = ClusterLock.acquire(kv, "lab", "pyinfra inventories/lab.py deploys/etcd.py")
    with pytest.raises(LockError) as refused:
        ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 inventories/lab.py")
    message = str(refused.value)
    assert message.startswith("cluster lab is locked by ")
    assert f", run {first.record['run']} running `pyinfra inventories/lab.py deploys/etcd.py`" in (
        message
    )
    first.release()
    second = ClusterLock.acquire(kv, "lab", "pyinfra inventories/lab.py deploys/workers.py")
    second.renew()
    second.release()


def test_a_dead_holders_live_lease_is_waited_out_never_taken(kv, capsys):
    killed = ClusterLock.acquire(kv, "lab", "galley rollout kubelet inv.py", lease=3)
    _written(kv, {**killed.record, "pid": _dead_pid()})  # as if killed with SIGKILL
    started = time.monotonic()
    resumed = ClusterLock.acquire(kv, "lab", "galley rollout kubelet --resume inv.py", lease=3)
    waited = time.monotonic() - started
    assert 2 < waited < 6, waited
    assert "to run out: that run is gone, and a live lease is never taken over" in (
        capsys.readouterr().err
    )
    resumed.release()


def test_another_machine_with_this_hostname_cannot_take_a_live_lease(kv):
    mine = ClusterLock.acquire(kv, "lab", "pyinfra x", lease=60)
    # A container with this hostname and pids of its own (one that does not run here).
    _written(kv, {**mine.record, "machine_id": "0" * 32, "pid": _dead_pid(), "run": "other"})
    assert mine.record["machine_id"] == machine_id() != "0" * 32
    with pytest.raises(LockError, match="cluster lab is locked by "):
        ClusterLock.acquire(kv, "lab", "pyinfra y")
    # Its lease ran out: named, and broken only on request.
    later = lambda: time.time() + 61  # noqa: E731
    with pytest.raises(LockError, match="whose lease ran out: if that run is gone"):
        ClusterLock.acquire(kv, "lab", "pyinfra y", clock=later)
    with pytest.raises(LockError, match="lease is live"):
        break_lock(kv, "lab")
    assert break_lock(kv, "lab", clock=later).startswith("broke the lock of cluster lab: ")
    ClusterLock.acquire(kv, "lab", "pyinfra x").release()
    assert break_lock(kv, "lab") == "cluster lab is not locked"


def test_only_the_lock_break_policy_breaks_a_lock_and_every_job_can_hold_one(kv):
    holder = ClusterLock.acquire(kv, "lab", "pyinfra x")
    for job in ("etcd", "control-plane", "workers", "monitoring", "deploy", "operator"):
        job_token = token_client(kv, f"lab-{job}")
        with pytest.raises(VaultError, match="breaking the lock of cluster lab failed"):
            break_lock(job_token, "lab", force=True)
    assert "pyinfra x" in break_lock(token_client(kv, "lab-lock-break"), "lab", force=True)
    with pytest.raises(LockError, match="broken by another operator"):
        holder.renew()
    for job in ("etcd", "control-plane", "workers", "monitoring"):
        taken = ClusterLock.acquire(token_client(kv, f"lab-{job}"), "lab", f"pyinfra {job}")
        taken.renew()
        taken.release()


# As pyinfra and galley's CLI run: gevent's threads (the lease is renewed by a greenlet).
HOLDER = """
from gevent import monkey; monkey.patch_all()
import sys, time, hvac
from galley.lock import ClusterLock
client = hvac.Client(url=sys.argv[1], token=sys.argv[2], verify=sys.argv[3])
ClusterLock.acquire(client, "lab", "pyinfra deploys/cluster.py", lease=2).keep()
print("holding", flush=True)
time.sleep(60)
"""


def test_a_run_whose_lock_is_broken_stops_at_its_next_renewal(kv, openbao):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), kv.url, kv.token, kv.session.verify],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        time.sleep(1)  # it renewed at least once
        check = ClusterLock.acquire
        with pytest.raises(LockError, match="is locked by"):
            check(kv, "lab", "pyinfra y")
        break_lock(kv, "lab", force=True)
        started = time.monotonic()
        assert holder.wait(timeout=10) == LOST_EXIT
        assert time.monotonic() - started < 1.5  # within a renewal (every 0.5 s)
        stderr = holder.stderr.read()
        assert "galley: this run stopped: the lock of cluster lab was broken by another " in (
            stderr
        )
        assert "check-and-set" in stderr
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()


def test_a_run_that_cannot_renew_stops_before_its_lease_runs_out(kv):
    held = ClusterLock.acquire(kv, "lab", "pyinfra x", lease=2)
    # Vault out of reach from here on (nothing listens on that loopback address).
    held.client = hvac.Client(url="https://127.0.3.7:8200", timeout=1)
    stops: list[tuple[float, str]] = []
    done = threading.Event()

    def stop(message: str) -> None:
        stops.append((time.time(), message))
        done.set()

    held.on_lost = stop
    expires = float(held.record["expires"])
    held.keep()
    assert done.wait(5)
    ((when, message),) = stops
    assert when < expires  # stopped while the lease was still its own
    assert "galley: this run stopped: its lease could not be renewed in time: writing the " in (
        message
    )
    held.stopped.set()


def test_check_and_set_lets_only_one_of_two_simultaneous_runs_win(kv):
    winner = ClusterLock.acquire(kv, "lab", "pyinfra a")
    late = ClusterLock(kv, "lab", {"holder": "b", "command": "pyinfra b"}, version=0)
    with pytest.raises(LockError, match="taken by another run at the same moment"):
        late._write(lambda: "taken by another run at the same moment; run again later")
    winner.release()


def test_check_free_names_the_holder_and_takes_nothing(kv):
    check_free(kv, "lab")  # free: nothing to say
    holder = ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 inv.py")
    with pytest.raises(LockError) as refused:
        check_free(kv, "lab")
    assert "running `galley rollout kubelet --to 1.33.6 inv.py` since " in str(refused.value)
    holder.release()
    check_free(kv, "lab")
    ClusterLock.acquire(kv, "lab", "pyinfra x").release()  # the peek took nothing
