"""Real etcd members on 127.0.0.1 (plain http) for tests: `LocalHosts` starts, stops and
wipes them the way the executors' host layers do on droplets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from galley.etcd.client import PLAIN, EtcdClient, EtcdctlError
from galley.etcd.plan import Wanted

TOKEN = "galley-membership-test"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class LocalMember:
    """One etcd member of a local cluster: its ports, data dir and process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    @property
    def wanted(self) -> Wanted:
        return Wanted(
            self.name,
            f"http://127.0.0.1:{self.peer_port}",
            f"http://127.0.0.1:{self.client_port}",
        )


@dataclass
class LocalHosts:
    """`MemberHosts` over etcd processes on 127.0.0.1; records every start."""

    release: Path
    root: Path
    members: dict[str, LocalMember] = field(default_factory=dict)
    starts: list[tuple[str, str, str]] = field(default_factory=list)  # name, state, cluster

    def wanted(self, *names: str) -> list[Wanted]:
        """The inventory of ``names`` (ports chosen on first mention)."""
        new = [name for name in names if name not in self.members]
        ports = iter(free_ports(2 * len(new)))
        for name in new:
            self.members[name] = LocalMember(name, next(ports), next(ports), self.root / name)
        return [self.members[name].wanted for name in names]

    def bootstrap(self, *names: str) -> None:
        """Start a new cluster of ``names`` (`healthy` waits for it)."""
        initial = ",".join(f"{w.name}={w.peer_url}" for w in self.wanted(*names))
        for name in names:
            self._spawn(name, "new", initial)

    def healthy(self, *names: str) -> bool:
        """Wait until members ``names`` are listed, started and healthy."""
        seeds = [w.client_url for w in self.wanted(*names)]

        def all_healthy() -> bool:
            try:
                members = [m for m in self.client().members(seeds) if m.name in names]
            except EtcdctlError:
                return False
            health = self.client().health(members)
            return len(members) == len(names) and set(health.values()) == {None}

        return wait_for(all_healthy)

    def client(self, run=None) -> EtcdClient:
        return EtcdClient(
            run or local_run,
            tls=PLAIN,
            etcdctl=str(self.release / "etcdctl"),
            etcdutl=str(self.release / "etcdutl"),
        )

    def add_learner_by_hand(self, seed: str, name: str) -> str:
        """``member add --learner`` outside galley (retried while etcd's 5 s health window
        after the cluster started is not over); the initial-cluster etcd returned."""
        answers: list[str] = []

        def added() -> bool:
            try:
                answers.append(
                    self.client().add_learner([seed], name, self.wanted(name)[0].peer_url)[1]
                )
            except EtcdctlError:
                return False
            return True

        assert wait_for(added)
        return answers[0]

    def kill(self, name: str) -> None:
        """Kill the member's etcd (SIGKILL), as a dead droplet would."""
        process = self.members[name].process
        process.kill()
        process.wait(timeout=10)

    def stop(self, name: str) -> None:
        process = self.members[name].process
        process.terminate()
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Start a stopped member again on its data."""
        self._spawn(name, "existing", "")
        assert self.healthy(name)

    def data_dir_empty(self, name: str) -> bool:
        return not (self.members[name].data_dir / "member").exists()

    def start_member(self, name: str, initial_cluster: str) -> None:
        self._spawn(name, "existing", initial_cluster)

    def stop_and_wipe(self, name: str) -> None:
        member = self.members[name]
        if member.process and member.process.poll() is None:
            self.stop(name)
        shutil.rmtree(member.data_dir, ignore_errors=True)

    def running(self, name: str) -> bool:
        process = self.members[name].process
        return process is not None and process.poll() is None

    def close(self) -> None:
        for member in self.members.values():
            if member.process and member.process.poll() is None:
                member.process.kill()
                member.process.wait(timeout=10)

    def _spawn(self, name: str, state: str, initial: str) -> None:
        member = self.members[name]
        w = member.wanted
        member.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.starts.append((name, state, initial))
        command = [
            str(self.release / "etcd"),
            f"--name={name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={w.client_url}",
            f"--advertise-client-urls={w.client_url}",
            f"--listen-peer-urls={w.peer_url}",
            f"--initial-advertise-peer-urls={w.peer_url}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={TOKEN}",
            "--listen-metrics-urls=",
            "--log-level=warn",
        ] + ([f"--initial-cluster={initial}"] if initial else [])
        log = (self.root / f"{name}.log").open("a")
        member.process = subprocess.Popen(command, stdout=log, stderr=log)
        log.close()


def local_run(command: str) -> tuple[bool, str, str]:
    """The runner the tests give the executor: sh on this machine."""
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    return done.returncode == 0, done.stdout, done.stderr


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
