"""etcd's authorisation: the calls galley makes from the declared users, and what real etcd
3.5 then lets each declared identity do (both ways), with writes going on throughout."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from galley.components.etcd import ETCD
from galley.components.flanneld import ETCD_CLIENT as FLANNEL_ETCD_CLIENT
from galley.components.kube_apiserver import KUBE_APISERVER
from galley.etcd.access import (
    READ,
    READWRITE,
    STAMP_KEY,
    AuthState,
    EtcdUser,
    Grant,
    changes,
    stamp_value,
)
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.layout import HEALTHCHECK_CLIENT, MAINTENANCE_CLIENT
from galley.facts.etcd import EtcdAccess
from tests.etcd_local import free_ports
from tests.etcd_writer import Writer
from tests.standins.pki import CA

HEALTH = EtcdUser("health", (Grant(READ, "health"),))
APP = EtcdUser("app", (Grant(READWRITE, "/app/", prefix=True),))
ADMIN = EtcdUser("admin", root=True)


def _converged() -> AuthState:
    return AuthState(
        True,
        {
            "root": frozenset({"root"}),
            "admin": frozenset({"root"}),
            "app": frozenset({"galley-app"}),
        },
        {"galley-app": frozenset({("readwrite", "/app/", "/app0")})},
    )


def test_a_new_cluster_gets_every_user_before_authorisation_goes_on():
    calls = changes(AuthState(False), [APP, ADMIN])
    assert calls == [
        ["role", "add", "galley-app"],
        ["role", "grant-permission", "galley-app", "readwrite", "/app/", "/app0"],
        ["user", "add", "root", "--no-password"],
        ["user", "grant-role", "root", "root"],
        ["user", "add", "admin", "--no-password"],
        ["user", "grant-role", "admin", "root"],
        ["user", "add", "app", "--no-password"],
        ["user", "grant-role", "app", "galley-app"],
        ["auth", "enable"],
    ]


def test_etcd_as_declared_needs_no_call():
    assert changes(_converged(), [APP, ADMIN]) == []


def test_drift_is_put_back_exactly():
    state = _converged()
    drifted = AuthState(
        True,
        {**state.users, "app": frozenset({"galley-app", "root"}), "old": frozenset({"galley-old"})},
        {
            "galley-app": frozenset({("read", "/app/", "/app0"), ("readwrite", "/other", "")}),
            "galley-old": frozenset({("read", "x", "")}),
        },
    )
    assert changes(drifted, [APP, ADMIN]) == [
        ["role", "revoke-permission", "galley-app", "/app/", "/app0"],
        ["role", "revoke-permission", "galley-app", "/other"],
        ["role", "grant-permission", "galley-app", "readwrite", "/app/", "/app0"],
        ["user", "revoke-role", "app", "root"],
        ["user", "delete", "old"],
        ["role", "delete", "galley-old"],
    ]


def test_a_declaration_without_root_is_refused():
    with pytest.raises(ValueError, match="root"):
        changes(AuthState(False), [APP, HEALTH])


def test_the_fact_reads_users_roles_and_errors():
    status = '{"header":{},"enabled":true,"authRevision":7}'
    output = [
        "##galley-etcd-access status",
        status,
        "##galley-etcd-access user app",
        '{"roles":["galley-app"]}',
        "##galley-etcd-access role galley-app",
        '{"perm":[{"permType":2,"key":"L2FwcC8=","range_end":"L2FwcDA="},{"key":"aGVhbHRo"}]}',
    ]
    found = EtcdAccess().process(output)
    assert found == {
        "enabled": True,
        "revision": 7,
        "users": {"app": ["galley-app"]},
        "roles": {"galley-app": [["read", "health", ""], ["readwrite", "/app/", "/app0"]]},
        "stamp": None,
        "error": None,
    }
    assert AuthState.of(found) == AuthState(
        True,
        {"app": frozenset({"galley-app"})},
        {"galley-app": frozenset({("readwrite", "/app/", "/app0"), ("read", "health", "")})},
    )
    failed = EtcdAccess().process(
        ["##galley-etcd-access error", "Error: context deadline exceeded"]
    )
    assert failed["enabled"] is None and failed["error"] == "context deadline exceeded"


class _Etcd:
    """One real etcd member on 127.0.0.1 with client-certificate authentication, and
    certificates for every identity the components declare."""

    def __init__(self, release: Path, root: Path) -> None:
        self.release, self.pki = release, root / "pki"
        self.pki.mkdir()
        self.ca = CA(self.pki, "ca")
        self.ca.issue("member")
        client, peer = free_ports(2)
        self.endpoint = f"https://127.0.0.1:{client}"
        self.process = subprocess.Popen(
            [
                release / "etcd",
                f"--data-dir={root / 'data'}",
                f"--listen-client-urls={self.endpoint}",
                f"--advertise-client-urls={self.endpoint}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                f"--cert-file={self.pki / 'member.crt'}",
                f"--key-file={self.pki / 'member.key'}",
                f"--trusted-ca-file={self.pki / 'ca.crt'}",
                "--client-cert-auth",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def identity(self, cn: str) -> dict[str, str]:
        """etcdctl's TLS flags for a new certificate with CN ``cn``."""
        if not (self.pki / f"{cn}.crt").exists():
            self.ca.issue(cn, user=cn)
        return {
            "cacert": str(self.pki / "ca.crt"),
            "cert": str(self.pki / f"{cn}.crt"),
            "key": str(self.pki / f"{cn}.key"),
        }

    def etcdctl(self, cn: str, *args: str) -> subprocess.CompletedProcess:
        line = etcdctl_command(
            [self.endpoint], *args, etcdctl=str(self.release / "etcdctl"), **self.identity(cn)
        )
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True)

    def read(self, trust_stamp: bool = False) -> dict:
        """The `EtcdAccess` fact's value, through its own command."""
        tls = self.identity(MAINTENANCE_CLIENT)
        command = EtcdAccess().command(
            etcdctl=str(self.release / "etcdctl"),
            endpoint=self.endpoint,
            cacert=tls["cacert"],
            cert=tls["cert"],
            key=tls["key"],
            trust_stamp=trust_stamp,
        )
        output = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        found = EtcdAccess().process(output.stdout.splitlines())
        assert found["error"] is None, found
        return found

    def access(self) -> AuthState:
        """etcd's users and roles, read in full."""
        return AuthState.of(self.read())


@pytest.fixture
def etcd(etcd_release, tmp_path):
    member = _Etcd(etcd_release, tmp_path)
    deadline = time.monotonic() + 20
    while member.etcdctl(MAINTENANCE_CLIENT, "endpoint", "health").returncode:
        assert time.monotonic() < deadline, "etcd did not start"
        time.sleep(0.1)
    yield member
    member.process.terminate()
    member.process.wait(timeout=10)
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _allowed(result: subprocess.CompletedProcess) -> bool:
    if result.returncode == 0:
        return True
    assert "permission denied" in result.stderr or "user name not found" in result.stderr, (
        result.stderr
    )
    return False


def test_real_etcd_lets_each_declared_identity_do_exactly_its_part(etcd, etcd_writer):
    declared = [
        cert.etcd_user
        for cert in (*ETCD.certs, *KUBE_APISERVER.certs, FLANNEL_ETCD_CLIENT)
        if cert.etcd_user is not None
    ]
    apiserver, flannel = "kube-apiserver-etcd-client", "flannel-etcd-client"
    assert {user.name for user in declared} == {
        HEALTHCHECK_CLIENT,
        MAINTENANCE_CLIENT,
        apiserver,
        flannel,
    }
    # The apiserver keeps writing while the users are made and authorisation goes on.
    apiserver_tls = etcd.identity(apiserver)
    writer = Writer(
        [etcd.endpoint],
        (apiserver_tls["cert"], apiserver_tls["key"], apiserver_tls["cacert"]),
        etcd_writer,
        key="/registry/pods/w",
    )
    writer.start()
    try:
        time.sleep(0.5)
        for call in changes(etcd.access(), declared):
            assert etcd.etcdctl(MAINTENANCE_CLIENT, *call).returncode == 0, call
        time.sleep(0.5)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.failed == [] and writer.ok >= 10
    assert etcd.access().enabled and changes(etcd.access(), declared) == []

    def may(cn: str, *args: str) -> bool:
        return _allowed(etcd.etcdctl(cn, *args))

    assert may(apiserver, "get", "/registry/pods/w")
    assert not may(apiserver, "get", "/coreos.com/network/config")
    assert not may(apiserver, "put", "/galley/cluster-identity", "x")
    assert may(flannel, "put", "/coreos.com/network/subnets/10.0.1.0-24", "{}")
    assert not may(flannel, "get", "/registry/pods/w")
    assert not may(flannel, "get", "--prefix", "/")
    assert may(HEALTHCHECK_CLIENT, "endpoint", "health")
    assert may(HEALTHCHECK_CLIENT, "get", "health")
    assert not may(HEALTHCHECK_CLIENT, "put", "health", "x")
    assert not may(HEALTHCHECK_CLIENT, "get", "/registry/pods/w")
    # A CN etcd has no user for (e.g. the metrics scrape's) touches no key.
    assert not may("etcd-metrics-reader", "get", "/registry/pods/w")
    # Only the maintenance identity administers etcd.
    assert not may(apiserver, "snapshot", "save", str(etcd.pki / "a.db"))
    assert not may(apiserver, "user", "grant-role", apiserver, "root")
    assert may(MAINTENANCE_CLIENT, "snapshot", "save", str(etcd.pki / "m.db"))
    assert may(MAINTENANCE_CLIENT, "endpoint", "status")


def test_the_stamp_spares_reading_users_until_anyone_changes_them(etcd):
    maintenance = EtcdUser(MAINTENANCE_CLIENT, root=True)
    declared = [APP, maintenance]
    for call in changes(etcd.access(), declared):
        assert etcd.etcdctl(MAINTENANCE_CLIENT, *call).returncode == 0, call
    # Not stamped yet: the users and roles are read.
    assert etcd.read(trust_stamp=True)["users"] is not None
    revision = etcd.read()["revision"]
    assert revision > 0
    stamp = stamp_value(revision, declared)
    assert etcd.etcdctl(MAINTENANCE_CLIENT, "put", STAMP_KEY, stamp).returncode == 0
    found = etcd.read(trust_stamp=True)
    assert (found["stamp"], found["users"], found["revision"]) == (stamp, None, revision)
    # Another declaration does not match the stamp; only the root identity reads it.
    assert stamp_value(revision, [*declared, HEALTH]) != stamp
    assert not _allowed(etcd.etcdctl(APP.name, "get", STAMP_KEY))
    # Anyone's change to users or roles moves the revision past the stamp: read in full again.
    assert (
        etcd.etcdctl(
            MAINTENANCE_CLIENT, "role", "grant-permission", "galley-app", "read", "x"
        ).returncode
        == 0
    )
    found = etcd.read(trust_stamp=True)
    assert found["stamp"] is None and found["revision"] > revision
    assert changes(AuthState.of(found), declared) == [
        ["role", "revoke-permission", "galley-app", "x"]
    ]


def test_the_writer_names_each_write_no_member_accepted(etcd, etcd_writer):
    """The writer the etcd tests rely on can fail: with its only member stopped, writes fail
    once their 5 s are up, each named."""
    tls = etcd.identity(MAINTENANCE_CLIENT)
    writer = Writer([etcd.endpoint], (tls["cert"], tls["key"], tls["cacert"]), etcd_writer)
    writer.start()
    try:
        time.sleep(0.5)
        etcd.process.terminate()
        etcd.process.wait(timeout=10)
        time.sleep(6)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.ok >= 5 and writer.failed, (writer.ok, writer.failed)
    assert all("context deadline exceeded" in failure for failure in writer.failed), writer.failed
