"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import socket
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import hvac
import pytest

from galley.lab.artifacts import ARTIFACTS, DEFAULT_SOURCE_DIR, build_all, go_builder
from galley.lab.gobuild import own
from galley.lab.openbao import OpenBao, bao_binary
from galley.lab.state import CACHE_DIR
from galley.lab.system import LabError


def _lab_release(name: str, tmp_path_factory) -> Path:
    """The lab's release ``name`` (as the mirror serves it), unpacked: its top directory.

    Built into the lab's cache like `galley lab up` does (downloading Debian's packages or Go
    modules the first time), so it needs root.
    """
    if os.geteuid() != 0:
        pytest.skip(f"building the lab's {name} release needs root (it caches under /var/cache)")
    (artifact,) = [artifact for artifact in ARTIFACTS if artifact.name == name]
    build_all(CACHE_DIR / "mirror", artifacts=[artifact])
    unpacked = tmp_path_factory.mktemp(f"{name}-release")
    with tarfile.open(CACHE_DIR / "mirror" / artifact.upstream_path) as tar:
        tar.extractall(unpacked, filter="data")
    (top,) = unpacked.iterdir()
    return top


@pytest.fixture(scope="session")
def etcd_release(tmp_path_factory) -> Path:
    """The lab's etcd 3.5.30 release (Debian's build, repacked): etcd, etcdctl, etcdutl."""
    return _lab_release("etcd", tmp_path_factory)


@pytest.fixture(scope="session")
def etcd_writer() -> Path:
    """The lab's etcd writer (`tests.etcd_writer.Writer`), built from its Go modules once per
    machine (needs root: it caches under /var/cache)."""
    if os.geteuid() != 0:
        pytest.skip("building the lab's etcd writer needs root (it caches under /var/cache)")
    return go_builder(DEFAULT_SOURCE_DIR).build(own("etcd-writer")) / "etcd-writer"


@pytest.fixture(scope="session")
def prometheus_release(tmp_path_factory) -> Path:
    """The lab's Prometheus release (Debian's build, repacked): prometheus, promtool."""
    return _lab_release("prometheus", tmp_path_factory)


@pytest.fixture(scope="session")
def alertmanager_release(tmp_path_factory) -> Path:
    """The lab's Alertmanager release (built from its Go modules): alertmanager, amtool."""
    return _lab_release("alertmanager", tmp_path_factory)


@pytest.fixture(autouse=True)
def private_host_key_pins(tmp_path_factory, monkeypatch):
    """Keep host keys that inventories pin per droplet out of the operator's home directory."""
    monkeypatch.setenv("GALLEY_KNOWN_HOSTS", str(tmp_path_factory.mktemp("known_hosts")))


def _free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return _free_ports(1)[0]


@pytest.fixture(scope="session")
def bao() -> str:
    """The ``bao`` binary; tests that need it are skipped, saying so, when it is missing."""
    try:
        return bao_binary()
    except LabError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def openbao(bao, tmp_path_factory) -> Iterator[OpenBao]:
    """A real OpenBao server for the whole session (galley.lab.openbao, as the lab runs it) on
    free 127.0.0.1 ports, logging every request raw to `vault_audit_log`."""
    directory = tmp_path_factory.mktemp("openbao")
    port, cluster_port = _free_ports(2)
    server = OpenBao.start(
        directory, port, cluster_port=cluster_port, audit_log=directory / "audit.log"
    )
    yield server
    server.stop()


@pytest.fixture
def vault_audit_log(openbao: OpenBao) -> Path:
    """The session OpenBao's audit log: one JSON line per request and response, unhashed."""
    return openbao.directory / "audit.log"


@pytest.fixture
def vault(openbao: OpenBao) -> Iterator[hvac.Client]:
    """A root client of the session's OpenBao. Secret engines, auth methods and policies the
    test adds are removed afterwards (and a sealed server unsealed): every test starts from a
    server as fresh as a new one."""
    client = hvac.Client(url=openbao.addr, token=openbao.root_token, verify=str(openbao.ca_cert))
    before = _configuration(client)
    yield client
    openbao.unseal()
    mounts, auth_methods, policies = (
        now - then for now, then in zip(_configuration(client), before, strict=True)
    )
    for path in mounts:
        client.sys.disable_secrets_engine(path)
    for path in auth_methods:
        client.sys.disable_auth_method(path)
    for name in policies:
        client.sys.delete_policy(name)


def _configuration(client: hvac.Client) -> tuple[set[str], set[str], set[str]]:
    """The server's secret engine paths, auth method paths and ACL policy names."""
    return (
        set(client.sys.list_mounted_secrets_engines()["data"]),
        set(client.sys.list_auth_methods()["data"]),
        set(client.sys.list_acl_policies()["data"]["keys"]),
    )
