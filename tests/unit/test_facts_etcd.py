"""galley.facts.etcd: fact commands run by sh against an etcdctl stand-in replaying output
captured from etcd/etcdctl 3.5.30, plus one run of the real etcd through the pyinfra CLI."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from galley.facts.etcd import EtcdHealth, EtcdMembers

# --- Output captured from etcd 3.5.30 (single member cap1, then a learner added) ---
MEMBERS = (
    '{"header":{"cluster_id":4160366030328907383,"member_id":272213379854044400,"raft_term":2},'
    '"members":[{"ID":272213379854044400,"name":"cap1","peerURLs":["http://127.0.0.1:35894"],'
    '"clientURLs":["http://127.0.0.1:35893"]}]}'
)
MEMBERS_WITH_UNSTARTED_LEARNER = (
    '{"header":{"cluster_id":4160366030328907383,"member_id":272213379854044400,"raft_term":2},'
    '"members":[{"ID":272213379854044400,"name":"cap1","peerURLs":["http://127.0.0.1:35894"],'
    '"clientURLs":["http://127.0.0.1:35893"]},{"ID":17965875843999227692,'
    '"peerURLs":["http://127.0.0.1:35898"],"isLearner":true}]}'
)
HEALTHY = '[{"endpoint":"http://127.0.0.1:35893","health":true,"took":"3.580657ms"}]'
STATUS = (
    '[{"Endpoint":"http://127.0.0.1:35893","Status":{"header":{"cluster_id":4160366030328907383,'
    '"member_id":272213379854044400,"revision":1,"raft_term":2},"version":"3.5.30",'
    '"dbSize":20480,"leader":272213379854044400,"raftIndex":5,"raftTerm":2,'
    '"raftAppliedIndex":5,"dbSizeInUse":16384}}]'
)
NOSPACE_HEALTH = (
    '[{"endpoint":"http://127.0.0.1:35893","health":false,"took":"4.431613ms",'
    '"error":"Active Alarm(s): NOSPACE "}]'
)
NOSPACE_STATUS = (
    '[{"Endpoint":"http://127.0.0.1:35893","Status":{"header":{"cluster_id":4160366030328907383,'
    '"member_id":272213379854044400,"revision":9,"raft_term":2},"version":"3.5.30",'
    '"dbSize":249856,"leader":272213379854044400,"raftIndex":13,"raftTerm":2,'
    '"raftAppliedIndex":13,"errors":["memberID:272213379854044400 alarm:NOSPACE "],'
    '"dbSizeInUse":249856}}]'
)
REFUSED_LOG = (
    '{"level":"warn","ts":"2026-11-23T10:43:20.963918Z","logger":"etcd-client",'
    '"caller":"v3/retry_interceptor.go:66","msg":"retrying of unary invoker failed",'
    '"target":"etcd-endpoints://0x29c3f03c81e0/127.0.0.1:35900",'
    '"peer":"Peer{Addr: <nil>, LocalAddr: <nil>, AuthInfo: <nil>}","attempt":0,'
    '"error":"rpc error: code = DeadlineExceeded desc = latest balancer error: connection '
    'error: desc = \\"transport: Error while dialing: dial tcp 127.0.0.1:35900: connect: '
    'connection refused\\""}'
)
DOWN = {
    "member list": ("", f"{REFUSED_LOG}\nError: context deadline exceeded\n", 1),
    "endpoint health": (
        '[{"endpoint":"http://127.0.0.1:35900","health":false,"took":"1.002183754s",'
        '"error":"context deadline exceeded"}]',
        f"{REFUSED_LOG}\nError: unhealthy cluster\n",
        1,
    ),
    "endpoint status": (
        "[]",
        f"{REFUSED_LOG}\nFailed to get the status of endpoint http://127.0.0.1:35900 "
        "(context deadline exceeded)\n",
        1,
    ),
}
NO_CLIENT_CERT = (
    "",
    "Error: open /etc/etcd/pki/healthcheck-client.crt: no such file or directory\n",
    128,
)

# Replays <dir>/<subcommand>.{out,err,rc} and records its arguments, one per line.
STAND_IN = """#!/bin/sh
dir=$(dirname "$0")
printf '%s\\n' "$@" > "$dir/argv"
case "$*" in
  *"member list"*) f=member-list ;;
  *"endpoint health"*) f=endpoint-health ;;
  *"endpoint status"*) f=endpoint-status ;;
esac
cat "$dir/$f.out"
cat "$dir/$f.err" >&2
exit "$(cat "$dir/$f.rc")"
"""


def stand_in_etcdctl(directory: Path, replies: dict[str, tuple[str, str, int]]) -> Path:
    """An etcdctl stand-in answering each subcommand with (stdout, stderr, exit status)."""
    directory.mkdir(parents=True, exist_ok=True)
    for subcommand, (out, err, rc) in replies.items():
        base = directory / subcommand.replace(" ", "-")
        base.with_suffix(".out").write_text(out + "\n" if out else "")
        base.with_suffix(".err").write_text(err)
        base.with_suffix(".rc").write_text(str(rc))
    etcdctl = directory / "etcdctl"
    etcdctl.write_text(STAND_IN)
    etcdctl.chmod(0o755)
    return etcdctl


def gather(fact, **arguments):
    """Run the fact's command with sh and process its output as pyinfra does."""
    done = subprocess.run(
        ["sh", "-c", str(fact.command(**arguments))], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return fact.process(lines) if lines else fact.default()


def test_members_are_listed_with_hex_ids_like_etcdctl(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, {"member list": (MEMBERS, "", 0)})
    assert gather(EtcdMembers(), etcdctl=str(etcdctl)) == {
        "members": [
            {
                "id": "3c718a0714f0cf0",
                "name": "cap1",
                "peer_urls": ["http://127.0.0.1:35894"],
                "client_urls": ["http://127.0.0.1:35893"],
                "is_learner": False,
            }
        ],
        "error": None,
    }


def test_unstarted_learner_has_no_name_and_a_full_uint64_id(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, {"member list": (MEMBERS_WITH_UNSTARTED_LEARNER, "", 0)})
    learner = gather(EtcdMembers(), etcdctl=str(etcdctl))["members"][1]
    assert learner == {
        "id": "f9539ce490585f2c",
        "name": "",
        "peer_urls": ["http://127.0.0.1:35898"],
        "client_urls": [],
        "is_learner": True,
    }


def test_members_of_an_unreachable_etcd_report_the_underlying_error(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, DOWN)
    result = gather(EtcdMembers(), etcdctl=str(etcdctl))
    assert result["members"] is None
    assert result["error"].startswith("context deadline exceeded (rpc error:")
    assert "connect: connection refused" in result["error"]


def test_missing_etcdctl_is_reported_not_raised(tmp_path):
    missing = str(tmp_path / "no such\\tdir" / "etcdctl")
    assert gather(EtcdMembers(), etcdctl=missing) == {
        "members": None,
        "error": f"etcdctl not found at {missing}",
    }
    health = gather(EtcdHealth(), etcdctl=missing)
    assert health["healthy"] is False
    assert health["error"] == f"etcdctl not found at {missing}"
    assert health["version"] is None


def test_missing_client_certificate_is_the_reported_error(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, {"member list": NO_CLIENT_CERT})
    assert gather(EtcdMembers(), etcdctl=str(etcdctl))["error"] == (
        "open /etc/etcd/pki/healthcheck-client.crt: no such file or directory"
    )


def test_healthy_leader_reports_status(tmp_path):
    etcdctl = stand_in_etcdctl(
        tmp_path, {"endpoint health": (HEALTHY, "", 0), "endpoint status": (STATUS, "", 0)}
    )
    assert gather(EtcdHealth(), etcdctl=str(etcdctl)) == {
        "healthy": True,
        "error": None,
        "took": "3.580657ms",
        "version": "3.5.30",
        "db_size": 20480,
        "db_size_in_use": 16384,
        "leader": "3c718a0714f0cf0",
        "member_id": "3c718a0714f0cf0",
        "is_leader": True,
        "is_learner": False,
        "raft_term": 2,
        "raft_index": 5,
        "errors": [],
    }


def test_follower_is_not_leader(tmp_path):
    follower = STATUS.replace('"leader":272213379854044400', '"leader":17965875843999227692')
    etcdctl = stand_in_etcdctl(
        tmp_path, {"endpoint health": (HEALTHY, "", 0), "endpoint status": (follower, "", 0)}
    )
    health = gather(EtcdHealth(), etcdctl=str(etcdctl))
    assert health["leader"] == "f9539ce490585f2c"
    assert health["is_leader"] is False


def test_active_alarm_makes_member_unhealthy_but_status_is_still_read(tmp_path):
    etcdctl = stand_in_etcdctl(
        tmp_path,
        {
            "endpoint health": (NOSPACE_HEALTH, "Error: unhealthy cluster\n", 1),
            "endpoint status": (NOSPACE_STATUS, "", 0),
        },
    )
    health = gather(EtcdHealth(), etcdctl=str(etcdctl))
    assert health["healthy"] is False
    assert health["error"] == "Active Alarm(s): NOSPACE"
    assert health["errors"] == ["memberID:272213379854044400 alarm:NOSPACE"]
    assert health["db_size"] == 249856
    assert health["is_leader"] is True


def test_down_member_is_unhealthy_with_reason_and_no_status(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, DOWN)
    health = gather(EtcdHealth(), etcdctl=str(etcdctl))
    assert health["healthy"] is False
    assert health["error"].startswith("context deadline exceeded (")
    assert "connection refused" in health["error"]
    assert health["took"] == "1.002183754s"
    assert (health["version"], health["member_id"], health["leader"]) == (None, None, None)


def test_default_command_uses_galley_tls_paths_and_short_timeouts(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path, {"member list": (MEMBERS, "", 0)})
    gather(EtcdMembers(), etcdctl=str(etcdctl))
    assert (tmp_path / "argv").read_text().splitlines() == [
        "--endpoints=https://127.0.0.1:2379",
        "--dial-timeout=3s",
        "--command-timeout=3s",
        "--cacert=/etc/etcd/pki/ca.crt",
        "--cert=/etc/etcd/pki/maintenance-client.crt",
        "--key=/etc/etcd/pki/maintenance-client.key",
        "member",
        "list",
        "-w",
        "json",
    ]


def test_paths_are_shell_quoted_and_empty_tls_paths_dropped(tmp_path):
    etcdctl = stand_in_etcdctl(tmp_path / "it's a dir", {"member list": (MEMBERS, "", 0)})
    result = gather(
        EtcdMembers(), etcdctl=str(etcdctl), cacert="/p k/ca $HOME.crt", cert="", key=""
    )
    assert result["error"] is None
    argv = (tmp_path / "it's a dir" / "argv").read_text().splitlines()
    assert "--cacert=/p k/ca $HOME.crt" in argv
    assert not any(arg.startswith(("--cert", "--key")) for arg in argv)


# --- The real etcd 3.5.30 (Debian packages) with client TLS, through `pyinfra @local fact` ---
def _certificate(subject: str, key, issuer_key=None, issuer=None, *, ca=False, usage=None, ips=()):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if ips:
        alt_names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write_pki(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a healthcheck client certificate."""
    directory.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test-etcd-ca", ca_key, ca=True)
    paths = {"ca": directory / "ca.crt"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem, cn, usage, ips in (
        ("member", "cap1", [ExtendedKeyUsageOID.SERVER_AUTH], ["127.0.0.1"]),
        ("client", "etcd-healthcheck-client", [ExtendedKeyUsageOID.CLIENT_AUTH], []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(cn, key, ca_key, ca, usage=usage, ips=ips)
        paths[f"{stem}-crt"] = directory / f"{stem}.crt"
        paths[f"{stem}-key"] = directory / f"{stem}.key"
        paths[f"{stem}-crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{stem}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return {name: str(path) for name, path in paths.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def real_etcd(tmp_path, etcd_release):
    """A single-member etcd 3.5.30 serving clients over TLS on 127.0.0.1."""
    pki = _write_pki(tmp_path / "pki")
    client, peer = f"https://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    log = (tmp_path / "etcd.log").open("w")
    etcd = subprocess.Popen(
        [
            str(etcd_release / "etcd"),
            "--name=cap1",
            f"--data-dir={tmp_path / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=cap1={peer}",
            "--client-cert-auth",
            f"--trusted-ca-file={pki['ca']}",
            f"--cert-file={pki['member-crt']}",
            f"--key-file={pki['member-key']}",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        yield {
            "etcdctl": str(etcd_release / "etcdctl"),
            "endpoint": client,
            "cacert": pki["ca"],
            "cert": pki["client-crt"],
            "key": pki["client-key"],
        }
    finally:
        etcd.terminate()
        etcd.wait(timeout=10)
        log.close()


def _pyinfra_fact(fact: str, arguments: dict[str, str]):
    done = subprocess.run(
        [sys.executable, "-m", "pyinfra", "@local", "--json", "fact", fact]
        + [f"{key}={value}" for key, value in arguments.items()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(iter(json.loads(done.stdout).values()))["@local"]


def test_facts_read_a_real_tls_etcd_through_the_pyinfra_cli(real_etcd):
    deadline = time.monotonic() + 20
    health = _pyinfra_fact("galley.facts.etcd.EtcdHealth", real_etcd)
    while not health["healthy"] and time.monotonic() < deadline:
        time.sleep(0.5)
        health = _pyinfra_fact("galley.facts.etcd.EtcdHealth", real_etcd)
    assert health["healthy"], health["error"]
    assert health["version"] == "3.5.30"
    assert health["is_leader"] is True
    members = _pyinfra_fact("galley.facts.etcd.EtcdMembers", real_etcd)
    assert members["error"] is None
    [member] = members["members"]
    assert member["name"] == "cap1"
    assert member["id"] == health["member_id"]
    assert member["client_urls"] == [real_etcd["endpoint"]]

    without_client_cert = real_etcd | {"cert": "", "key": ""}
    refused = _pyinfra_fact("galley.facts.etcd.EtcdMembers", without_client_cert)
    assert refused["members"] is None
    assert refused["error"].startswith("context deadline exceeded (rpc error:")
