"""etcd on the lab through the real pyinfra CLI: TLS-only cluster, idempotence, re-signing,
durable rolling restarts, and bad input refused before any host changes."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galley.components.etcd import CRL
from galley.components.etcd import member_identity as etcd_member_identity
from galley.components.monitoring import PKI_DIR as MONITORING_PKI
from galley.components.renewal import UNIT as RENEWAL_UNIT
from galley.etcd.access import STAMP_KEY
from galley.etcd.etcdctl import etcdctl_command
from galley.etcd.identity import KEY as IDENTITY_KEY
from galley.host.tls import csr_command
from galley.lab.artifacts import ARTIFACTS
from galley.lab.state import CACHE_DIR
from galley.ops.kubeapi import ApiError, KubeApi
from galley.ops.revocation import vault_serial
from galley.vault.pki import load_certificate
from tests.etcd_writer import Writer
from tests.standins.pki import pem

from .conftest import (
    MEMBER_CERT,
    admin_files,
    changed,
    endpoints,
    etcd_call,
    install_member_cert,
    issue_client_cert,
    lab_inventory_variant,
    on_each,
    pyinfra_json,
    run_deploy,
    sign_verbatim,
    ssh,
    ssh_run,
)


def started_at(lab) -> dict[str, str]:
    """When each member's etcd unit last entered `active`."""
    facts = pyinfra_json("fact", "galley.facts.UnitStates", "units=etcd", "--limit", "etcd")
    return {host: str(units["etcd"]["since"]) for host, units in facts.popitem()[1].items()}


def member_certs() -> dict[str, dict]:
    """Each member's etcd certificate, as galley's Certificate fact reads it."""
    return pyinfra_json(
        "fact", "galley.facts.Certificate", f"path={MEMBER_CERT}", "--limit", "etcd"
    ).popitem()[1]


def fingerprint(lab) -> dict[str, str]:
    """Everything a deploy could change on the etcd members, plus when etcd started."""
    command = (
        "sha256sum /etc/etcd/etcd.env /etc/etcd/bootstrap.env /etc/systemd/system/etcd.service "
        "/etc/etcd/pki/*; "
        "readlink /opt/galley/etcd/current; ls /opt/galley/etcd; "
        "systemctl show -p ActiveEnterTimestamp,MainPID etcd"
    )
    return {d.name: ssh(d.name, command) for d in lab.droplets if "etcd" in d.roles}


def test_members_are_healthy_and_match_the_inventory(cluster, client_cert):
    members = json.loads(
        ssh(
            "lab-etcd-1",
            etcdctl_command(["https://127.0.0.1:2379"], "member", "list", "-w", "json"),
        )
    )["members"]
    expected = {d.name: f"https://{d.address}:2380" for d in cluster.droplets if "etcd" in d.roles}
    assert {m["name"]: m["peerURLs"][0] for m in members} == expected

    health = pyinfra_json("fact", "galley.facts.EtcdHealth", "--limit", "etcd").popitem()[1]
    assert set(health) == set(expected)
    assert all(h["healthy"] for h in health.values()), health
    assert sum(h["is_leader"] for h in health.values()) == 1

    cert, key, ca = client_cert
    for url in endpoints(cluster):
        answer = requests.get(f"{url}/health", cert=(cert, key), verify=ca, timeout=5)
        assert answer.json()["health"] == "true"


def test_plaintext_and_foreign_clients_are_refused(cluster, client_cert, tmp_path):
    _, _, ca = client_cert
    url = endpoints(cluster)[0]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/health", verify=ca, timeout=5)  # no client certificate
    foreign = _self_signed_client(tmp_path)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/health", cert=foreign, verify=ca, timeout=5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https", "http") + "/health", timeout=5)
    # The peer port, from another member (only members reach it): connected, but with no
    # peer certificate the TLS handshake is refused (curl: not 7, could not connect, nor 28,
    # timed out).
    peer = url.replace(":2379", ":2380")
    refused = ssh_run("lab-etcd-2", f"curl -sS --cacert /etc/etcd/pki/ca.crt {peer}/members")
    assert refused.returncode not in (0, 7, 28) and not refused.stdout, refused


def test_a_revoked_client_certificate_is_refused_after_one_renewal_run(
    cluster, client_cert, vault_client, etcdctl, etcd_writer, tmp_path
):
    """Revoked in Vault, a client certificate is refused by every member once each host's
    renewal timer has run once (here run at once, as the timer would within its interval):
    etcd reads the new list at the next connection, with no restart, and no write fails."""
    stolen = issue_client_cert(vault_client, tmp_path)
    urls = endpoints(cluster)

    def answers(url: str, cert: tuple[str, str, str]) -> bool:
        return etcd_call(etcdctl, url, cert, "get", "galley-writer").returncode == 0

    assert [answers(url, stolen) for url in urls] == [True] * len(urls)
    members = [d.name for d in cluster.droplets if "etcd" in d.roles]
    starts = started_at(cluster)
    writer = Writer(urls, client_cert, etcd_writer)
    writer.start()
    try:
        serial = load_certificate(Path(stolen[0]).read_text()).serial_number
        vault_client.secrets.pki.revoke_certificate(vault_serial(serial), "lab/pki/etcd")
        runs = on_each(members, f"systemctl start {RENEWAL_UNIT}.service && journalctl "
                       f"-u {RENEWAL_UNIT} --no-pager -n 5 -o cat")  # fmt: skip
        assert all(f"refreshed {CRL.path}" in run for run in runs), runs
        assert [answers(url, stolen) for url in urls] == [False] * len(urls)
        assert [answers(url, client_cert) for url in urls] == [True] * len(urls)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.ok > 0 and writer.failed == [], writer.failed
    assert started_at(cluster) == starts


def _signed_client(vault_client, directory: Path, cn: str) -> tuple[str, str]:
    """A client certificate of the lab's etcd CA for ``cn``, signed verbatim by root."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    request = csr.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = directory / f"{cn}.crt", directory / f"{cn}.key"
    cert_path.write_text(sign_verbatim(vault_client, "lab/pki/etcd", request) + "\n")
    key_path.write_bytes(pem(key))
    return str(cert_path), str(key_path)


def _self_signed_client(directory: Path) -> tuple[str, str]:
    """A client certificate for the right name from a CA etcd does not trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-healthcheck-client")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "foreign.crt", directory / "foreign.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(pem(key))
    return str(cert_path), str(key_path)


class _ApiWriter(threading.Thread):
    """Writes a ConfigMap through the Kubernetes API every 100 ms (the apiserver's etcd
    client at work): a write fails if no apiserver stores it within 5 s."""

    def __init__(self, cluster) -> None:
        super().__init__(daemon=True)
        urls = [f"https://{d.address}:6443" for d in cluster.droplets if "control_plane" in d.roles]
        self.api = KubeApi(urls, admin_files(), timeout=5)
        self.stop = threading.Event()
        self.ok, self.failed = 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            wanted = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "galley-writer", "namespace": "default"},
                "data": {"n": str(self.ok)},
            }
            try:
                self.api.ensure("/api/v1/namespaces/default/configmaps", wanted)
                self.ok += 1
            except (ApiError, requests.RequestException) as exc:
                self.failed.append(str(exc))
            time.sleep(0.1)


def test_etcd_authorisation_goes_on_in_a_running_cluster_with_no_failed_write(
    cluster, client_cert, vault_client, etcdctl, etcd_writer, tmp_path
):
    """A cluster from before etcd's authorisation (no users or roles, authorisation off) gets
    it from the next deploy: the dry run names the calls, no etcd or API write fails while
    they are made, then each identity does its own part only."""
    url = endpoints(cluster)[0]

    def ctl(*args: str, cert: tuple[str, str, str] = client_cert) -> subprocess.CompletedProcess:
        return etcd_call(etcdctl, url, cert, *args)

    assert "Authentication Status: true" in ctl("auth", "status").stdout
    assert ctl("auth", "disable").returncode == 0
    for kind in ("user", "role"):
        for name in ctl(kind, "list").stdout.split():
            assert ctl(kind, "delete", name).returncode == 0
    code, _, output = run_deploy("etcd", "--dry")
    assert code == 0 and "etcd access: role add galley-etcd-healthcheck-client" in output, output
    assert "Authentication Status: false" in ctl("auth", "status").stdout
    writers = [Writer(endpoints(cluster), client_cert, etcd_writer), _ApiWriter(cluster)]
    for writer in writers:
        writer.start()
    try:
        code, results, output = run_deploy("etcd")
        assert code == 0, output
        time.sleep(1)
    finally:
        for writer in writers:
            writer.stop.set()
            writer.join()
    assert [w.failed for w in writers] == [[], []] and min(w.ok for w in writers) > 5
    assert [name for name in changed(results) if "etcd access" in name], changed(results)
    assert "Authentication Status: true" in ctl("auth", "status").stdout

    def identity(host: str, directory: str, stem: str) -> tuple[str, str, str]:
        """A client identity as its host holds it, copied here."""
        paths = []
        for suffix in ("crt", "key"):
            path = tmp_path / f"{stem}.{suffix}"
            path.write_text(ssh(host, f"cat {directory}/{stem}.{suffix}") + "\n")
            paths.append(str(path))
        return paths[0], paths[1], client_cert[2]

    def may(cert: tuple[str, str, str], *args: str) -> bool:
        answer = ctl(*args, cert=cert)
        assert answer.returncode == 0 or "permission denied" in answer.stderr, answer.stderr
        return answer.returncode == 0

    apiserver = identity("lab-cp-1", "/etc/kubernetes/pki", "apiserver-etcd-client")
    health = identity("lab-etcd-1", "/etc/etcd/pki", "healthcheck-client")
    scrape = identity("lab-mon-1", MONITORING_PKI, "etcd-metrics")
    # flannel runs in kube mode here: etcd knows no flannel user, so even a certificate of
    # the etcd CA with its name (signed by root, as no role would) gets no key.
    flannel = (*_signed_client(vault_client, tmp_path, "flannel-etcd-client"), client_cert[2])
    for stranger in (scrape, flannel):
        assert not may(stranger, "get", "--prefix", "/")
        assert not may(stranger, "put", "/coreos.com/network/config", "{}")
    assert may(apiserver, "get", "/registry/configmaps/default/galley-writer", "--keys-only")
    assert not may(apiserver, "get", "/coreos.com/network/config")
    assert not may(apiserver, "get", IDENTITY_KEY)
    assert not may(apiserver, "snapshot", "save", str(tmp_path / "snapshot.db"))
    assert may(health, "endpoint", "health")
    assert not may(health, "put", "health", "x")
    assert not may(health, "get", "/registry/configmaps/default/galley-writer")
    # The members' scheduled snapshot (etcd's root: the maintenance identity) still works.
    ssh("lab-etcd-1", "systemctl start galley-etcd-snapshot.service")
    # The deploy stamped etcd's auth revision; anyone's change to a role moves the revision
    # past the stamp, and the next run reads every role again and takes the change back.
    assert ctl("get", STAMP_KEY, "--print-value-only").stdout.split()[0].isdigit()
    role = "galley-kube-apiserver-etcd-client"
    assert ctl("role", "grant-permission", role, "read", IDENTITY_KEY).returncode == 0
    assert may(apiserver, "get", IDENTITY_KEY)
    code, _, output = run_deploy("etcd", "--dry")
    assert f"etcd access: role revoke-permission {role} {IDENTITY_KEY}" in output, output
    code, results, output = run_deploy("etcd")
    assert code == 0, output
    assert [name for name in changed(results) if "etcd access" in name], changed(results)
    assert not may(apiserver, "get", IDENTITY_KEY)


def test_second_run_changes_and_restarts_nothing(cluster):
    before = fingerprint(cluster)
    code, results, output = run_deploy("etcd")
    assert code == 0, output
    assert changed(results) == {}
    assert fingerprint(cluster) == before


def served_serial(address: str, client_cert: tuple[str, str, str]) -> int:
    """The serial of the certificate a member presents on its client port right now."""
    context = ssl.create_default_context(cafile=client_cert[2])
    context.load_cert_chain(client_cert[0], client_cert[1])
    with (
        socket.create_connection((address, 2379), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=address) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_near_expiry_and_stale_address_are_resigned_without_a_restart(
    cluster, vault_client, client_cert, etcd_writer
):
    droplets = {d.name: d for d in cluster.droplets}
    # No renewal timer may get there first: the deploy is what re-signs here.
    for name in droplets:
        if "etcd" in droplets[name].roles:
            ssh(name, "systemctl stop galley-cert-renewal.timer")
    # lab-etcd-2: valid but issued for 1h (less than 1/6 of the 720h lifetime left).
    install_member_cert(vault_client, "lab-etcd-2", droplets["lab-etcd-2"].address, "1h")
    # lab-etcd-3: still listing a former address (198.18.0.99) next to its current one.
    csr_identity = etcd_member_identity("lab-etcd-3", droplets["lab-etcd-3"].address)
    stale = type(csr_identity)(
        csr_identity.cn, csr_identity.dns_names, (*csr_identity.ip_addresses, "198.18.0.99")
    )
    csr = ssh("lab-etcd-3", csr_command("/etc/etcd/pki/member.key", stale))
    signed = sign_verbatim(vault_client, "lab/pki/etcd", csr)
    ssh("lab-etcd-3", f"cat > {MEMBER_CERT} <<'EOF'\n{signed}\nEOF")
    before = started_at(cluster)
    serials_before = {host: cert["serial"] for host, cert in member_certs().items()}

    writer = Writer(endpoints(cluster), client_cert, etcd_writer)
    writer.start()
    try:
        time.sleep(1)
        code, results, output = run_deploy("etcd")
        time.sleep(1)
    finally:
        writer.stop.set()
        writer.join()
    assert code == 0, output

    serials = {host: cert["serial"] for host, cert in member_certs().items()}
    assert serials["lab-etcd-1"] == serials_before["lab-etcd-1"]
    assert serials["lab-etcd-2"] != serials_before["lab-etcd-2"]
    assert serials["lab-etcd-3"] != serials_before["lab-etcd-3"]
    assert "[lab-etcd-2]   re-signing /etc/etcd/pki/member.crt: expires in" in output
    assert "less than 1/6 of its 30d lifetime left" in output
    assert (
        "[lab-etcd-3]   re-signing /etc/etcd/pki/member.crt: SANs changed (-ip 198.18.0.99)"
        in output
    )
    assert "[lab-etcd-1]   re-signing" not in output

    # etcd reads its certificate for every handshake: the new one is served, nothing restarted.
    assert started_at(cluster) == before
    for name in ("lab-etcd-2", "lab-etcd-3"):
        assert served_serial(droplets[name].address, client_cert) == int(
            serials[name].replace(":", ""), 16
        )
    assert writer.ok > 20 and writer.failed == [], writer.failed

    certs = member_certs()
    assert certs["lab-etcd-2"]["days_left"] >= 29
    assert "198.18.0.99" not in certs["lab-etcd-3"]["ip_addresses"]

    code, results, output = run_deploy("etcd")
    assert code == 0 and changed(results) == {}, output


def test_a_run_killed_before_its_restart_still_restarts_next_time(cluster):
    # As if a run wrote the configuration and died before restarting etcd.
    ssh("lab-etcd-1", "touch /etc/etcd/etcd.env")
    before = started_at(cluster)
    code, results, output = run_deploy("etcd")
    assert code == 0, output
    assert changed(results) == {"etcd | Restart etcd (only if its files changed)": {"lab-etcd-1"}}
    after = started_at(cluster)
    assert after["lab-etcd-1"] != before["lab-etcd-1"]
    assert after["lab-etcd-2"] == before["lab-etcd-2"]


BAD_INVENTORIES = {
    "even": ("etcd = etcd[:2]\n", "etcd: 2 members: an even number adds no fault tolerance"),
    "duplicate address": (
        "etcd[1][1]['private_ip'] = etcd[0][1]['private_ip']\n",
        "lab-etcd-2: private_ip: 198.18.0.10 is also used by lab-etcd-1",
    ),
    "missing address": (
        "del etcd[2][1]['private_ip']\n",
        "lab-etcd-3: private_ip: missing (needed by cluster hosts)",
    ),
    "missing vault token": (
        "for _, data in etcd + control_plane + workers + monitoring:\n"
        "    del data['vault_token_file']\n",
        "vault: no Vault credentials: set vault_token_file (or VAULT_TOKEN)",
    ),
    "vault token in data": (
        "for _, data in etcd:\n    data['vault_token'] = 'pasted-token'\n",
        "vault: vault_token must not be in group or host data",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INVENTORIES))
def test_bad_inventories_are_refused_before_any_change(cluster, tmp_path, case, monkeypatch):
    body, message = BAD_INVENTORIES[case]
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    before = fingerprint(cluster)
    code, _, output = run_deploy(
        "etcd", inventory=lab_inventory_variant(tmp_path, body), check=False
    )
    assert code != 0
    assert message in output
    assert "nothing was changed" in output
    assert fingerprint(cluster) == before


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("etcd_version=3.9.9", "etcd_checksums: no sha256 for etcd 3.9.9 on amd64"),
        ("vault_addr=https://127.0.0.1:9", "Vault at https://127.0.0.1:9 is unreachable"),
        ("vault_addr=http://198.18.0.1:8200", "is plain HTTP to another machine"),
    ],
)
def test_bad_settings_are_refused_before_any_change(cluster, data, message):
    before = fingerprint(cluster)
    code, _, output = run_deploy("etcd", "--data", data, check=False)
    assert code != 0
    assert message in output and "nothing was changed" in output
    assert fingerprint(cluster) == before


def test_wrong_checksum_fails_and_leaves_the_running_etcd_alone(cluster, tmp_path):
    # Serve the same tarball as a "new" version whose pinned checksum is wrong.
    (etcd,) = [a for a in ARTIFACTS if a.name == "etcd"]
    source = CACHE_DIR / "mirror" / etcd.upstream_path
    fake = Path(str(source).replace(etcd.version, "3.5.99"))
    fake.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, fake)
    inventory = lab_inventory_variant(
        tmp_path,
        (
            "for _, data in etcd:\n"
            "    data['etcd_version'] = '3.5.99'\n"
            "    data['etcd_checksums'] = {'3.5.99': {'amd64': '0' * 64}}\n"
        ),
    )
    before = fingerprint(cluster)
    try:
        code, _, output = run_deploy("etcd", inventory=inventory, check=False)
    finally:
        shutil.rmtree(fake.parent)
    assert code != 0
    assert "sha256 mismatch" in output
    assert fingerprint(cluster) == before
