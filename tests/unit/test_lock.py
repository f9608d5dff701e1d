"""The cluster-wide lock against a real OpenBao: one holder, named to the others; a dead
holder's lease runs out and is broken only on request; check-and-set settles a race."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from galley.lock import LEASE_SECONDS, ClusterLock, LockError, break_lock, check_free
from galley.ops import vault_bootstrap


@pytest.fixture
def kv(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    return vault


def test_one_holder_at_a_time_and_the_others_are_told_who(kv):
    first = ClusterLock.acquire(kv, "lab", "pyinfra inventories/lab.py deploys/etcd.py")
    with pytest.raises(LockError) as refused:
        ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 inventories/lab.py")
    message = str(refused.value)
    assert message.startswith("cluster lab is locked by ")
    assert "running `pyinfra inventories/lab.py deploys/etcd.py` since " in message
    first.release()
    second = ClusterLock.acquire(kv, "lab", "pyinfra inventories/lab.py deploys/workers.py")
    second.renew()
    second.release()


def test_a_dead_holders_lease_runs_out_and_is_broken_only_on_request(kv):
    ClusterLock.acquire(kv, "lab", "pyinfra inventories/lab.py deploys/cluster.py")  # never freed
    with pytest.raises(LockError, match="lease is live"):
        break_lock(kv, "lab")
    later = lambda: time.time() + LEASE_SECONDS + 1  # noqa: E731
    with pytest.raises(LockError, match="whose lease ran out: if that run is gone"):
        ClusterLock.acquire(kv, "lab", "pyinfra x", clock=later)
    assert break_lock(kv, "lab", clock=later).startswith("broke the lock of cluster lab: ")
    ClusterLock.acquire(kv, "lab", "pyinfra x").release()
    assert break_lock(kv, "lab") == "cluster lab is not locked"


def test_check_and_set_lets_only_one_of_two_simultaneous_runs_win(kv):
    winner = ClusterLock.acquire(kv, "lab", "pyinfra a")
    late = ClusterLock(kv, "lab", {"holder": "b", "command": "pyinfra b"}, version=0)
    with pytest.raises(LockError, match="taken by another run at the same moment"):
        late._write(lambda: "taken by another run at the same moment; run again later")
    winner.release()


def test_a_holder_killed_on_this_machine_is_taken_over(kv):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 inv.py")
    killed.record["pid"] = dead.pid  # as if that process had held it and been killed
    killed.renew()
    ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 --resume inv.py").release()


def test_check_free_names_the_holder_and_takes_nothing(kv):
    check_free(kv, "lab")  # free: nothing to say
    holder = ClusterLock.acquire(kv, "lab", "galley rollout kubelet --to 1.33.6 inv.py")
    with pytest.raises(LockError) as refused:
        check_free(kv, "lab")
    assert "running `galley rollout kubelet --to 1.33.6 inv.py` since " in str(refused.value)
    holder.release()
    check_free(kv, "lab")
    ClusterLock.acquire(kv, "lab", "pyinfra x").release()  # the peek took nothing
