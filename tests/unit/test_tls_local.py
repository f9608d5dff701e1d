"""galley.host.tls.host_certificate through the real pyinfra CLI (@local) and a real OpenBao.

Slow-ish (each case runs the pyinfra CLI a few times, about 1 s per run); no root needed.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import hvac
import pytest
from cryptography.hazmat.primitives import serialization

from galley.components.etcd import member_identity
from galley.facts.tls import Certificates
from galley.host.tls import GENPKEY_OPTIONS
from galley.lab.openbao import OpenBao
from galley.ops import vault_bootstrap
from galley.vault import pki
from galley.vault.pki import Identity
from tests.group_data import small_cluster

PYINFRA = Path(sys.executable).with_name("pyinfra")
MOUNT = "lab/pki/etcd"
IDENTITY = member_identity("lab-etcd-1", "198.18.0.10")

DEPLOY = """
from pyinfra import host

from galley.vault.pki import Identity
from galley.host.tls import HostCert, host_certificates
from galley.vault.client import VaultSettings, lazy_client

pki_dir = host.data.pki_dir
owner = dict(owner=host.data.owner, group=host.data.group, ttl=host.data.get("ttl"))
host_certificates(
    certs=[
        HostCert(
            key_path=f"{pki_dir}/member.key",
            cert_path=f"{pki_dir}/member.crt",
            ca_path=f"{pki_dir}/ca.crt",
            identity=Identity("lab-etcd-1", ("lab-etcd-1", "localhost"), host.data.ips.split(",")),
            mount="lab/pki/etcd",
            role="renew-lab-etcd-1-member",
            **owner,
        ),
        HostCert(
            key_path=f"{pki_dir}/client.key",
            cert_path=f"{pki_dir}/client.crt",
            ca_path=f"{pki_dir}/ca.crt",
            identity=Identity("etcd-healthcheck-client"),
            mount="lab/pki/etcd",
            role="renew-lab-etcd-1-healthcheck-client",
            **owner,
        ),
    ],
    vault=lazy_client(VaultSettings.from_data(host.data)),
)
"""


class Lab:
    """The session's OpenBao bootstrapped for cluster "lab", the requests it got during the test
    (read back from its audit log), and a pki directory to deploy into."""

    def __init__(
        self, tmp_path: Path, openbao: OpenBao, vault: hvac.Client, audit_log: Path
    ) -> None:
        self.openbao = openbao
        self.vault = vault
        self.audit_log = audit_log
        self.audit_start = audit_log.stat().st_size
        self.dir = tmp_path / "pki"
        self.dir.mkdir()
        self.deploy = tmp_path / "deploy.py"
        self.deploy.write_text(DEPLOY)
        self.key, self.cert, self.ca = (
            self.dir / n for n in ("member.key", "member.crt", "ca.crt")
        )

    def bootstrap(self, address: str = "198.18.0.10", ttl: str = "720h") -> None:
        """Give lab-etcd-1 (at ``address``, certificates for ``ttl``: its member's and its
        health check client's) its roles in Vault."""
        hosts = small_cluster(
            "lab-etcd-1", addresses={"lab-etcd-1": address}, etcd_cert_ttl=ttl, client_cert_ttl=ttl
        )
        vault_bootstrap.bootstrap(self.vault, "lab", hosts)

    def data(self, ips: str = "127.0.0.1,198.18.0.10", ttl: str = "") -> dict[str, str]:
        """The --data values of a run."""
        return {
            "vault_addr": self.openbao.addr,
            "vault_ca_cert": str(self.openbao.ca_cert),
            "vault_token_file": str(self.openbao.token_file),
            "cluster_name": "lab",
            "pki_dir": str(self.dir),
            "ips": ips,
            "owner": pwd.getpwuid(os.getuid()).pw_name,
            "group": grp.getgrgid(os.getgid()).gr_name,
            **({"ttl": ttl} if ttl else {}),
        }

    def command(self, *extra: str, ips: str = "127.0.0.1,198.18.0.10", ttl: str = "") -> list[str]:
        """The pyinfra command line of a run."""
        command = [str(PYINFRA), "@local", str(self.deploy), *extra]
        for key, value in self.data(ips, ttl).items():
            command += ["--data", f"{key}={value}"]
        return command

    def run(self, *extra: str, ips: str = "127.0.0.1,198.18.0.10", ttl: str = "") -> str:
        """Run the deploy with the pyinfra CLI; return its output."""
        done = subprocess.run(
            self.command(*extra, ips=ips, ttl=ttl), capture_output=True, text=True, timeout=120
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert self.openbao.root_token not in output
        return output

    def requests(self) -> list[tuple[str, bytes]]:
        """(path, body as JSON) of every request Vault got since the fixture started."""
        with open(self.audit_log, "rb") as log:
            log.seek(self.audit_start)
            entries = [json.loads(line) for line in log if line.strip()]
        return [
            (entry["request"]["path"], json.dumps(entry["request"].get("data") or {}).encode())
            for entry in entries
            if entry["type"] == "request"
        ]

    def sign_requests(self) -> int:
        """How many sign requests Vault got so far."""
        return sum(path.startswith(f"{MOUNT}/sign/") for path, _ in self.requests())


@pytest.fixture
def lab(tmp_path, openbao, vault, vault_audit_log) -> Lab:
    # The bootstrap stores the cluster's shared service-account key; record the deploy only.
    vault_bootstrap.bootstrap(vault, "lab", small_cluster("lab-etcd-1"))
    return Lab(tmp_path, openbao, vault, vault_audit_log)


def test_first_run_signs_second_run_changes_nothing(lab):
    output = lab.run("-y")
    assert f"re-signing {lab.cert}: no certificate" in output
    assert stat.S_IMODE(lab.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(lab.cert.stat().st_mode) == 0o644
    ca = pki.read_ca(lab.vault, MOUNT)
    assert lab.ca.read_text() == ca
    assert pki.identity_of_cert(lab.cert.read_text()) == IDENTITY
    assert pki.resign_reason(lab.cert.read_text(), IDENTITY, ca, datetime.now(UTC)) is None

    files = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in lab.dir.iterdir()}
    output = lab.run("-y")
    assert "[@local] Success" not in output and "Re-sign" not in output
    assert "[@local] No changes" in output
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in lab.dir.iterdir()} == files
    assert lab.sign_requests() == 2  # member and client, once each

    # The private key never left the host: no request to Vault carried it, not even in a PEM.
    key = serialization.load_pem_private_key(lab.key.read_bytes(), password=None)
    secret = key.private_numbers().private_value.to_bytes(32, "big")
    requests = lab.requests()
    assert any(_pem_payloads(body) for _, body in requests)  # the CSR was seen
    for _, body in requests:
        assert b"PRIVATE KEY" not in body and secret.hex().encode() not in body
        assert not any(secret in der for der in _pem_payloads(body))


def _pem_payloads(body: bytes) -> list[bytes]:
    """The DER inside every PEM block of a (JSON) request body."""
    text = body.decode(errors="replace").replace("\\n", "\n")
    blocks = re.findall(r"-----BEGIN [A-Z ]+-----(.*?)-----END", text, re.S)
    return [base64.b64decode("".join(block.split())) for block in blocks]


def test_dry_run_shows_reason_and_signs_nothing(lab):
    output = lab.run("--dry")
    assert f"Re-sign {lab.cert}: no certificate" in output
    assert lab.sign_requests() == 0
    assert list(lab.dir.iterdir()) == []

    lab.run("-y")
    lab.bootstrap("198.18.0.11")
    output = lab.run("--dry", ips="127.0.0.1,198.18.0.11")
    assert f"Re-sign {lab.cert}: SANs changed (+ip 198.18.0.11, -ip 198.18.0.10)" in output
    assert "Re-sign" not in output.replace(f"Re-sign {lab.cert}", "")  # the client is fine
    assert lab.sign_requests() == 2


def test_short_lived_certificate_is_resigned_on_the_next_run(lab):
    lab.bootstrap(ttl="10s")
    lab.run("-y", ttl="10s")
    short = pki.load_certificate(lab.cert.read_text())
    # The deploy steps in at 1/6 of a lifetime left: wait until both certificates are there.
    due = max(
        cert.not_valid_after_utc - (cert.not_valid_after_utc - cert.not_valid_before_utc) / 6
        for cert in (
            pki.load_certificate(lab.cert.read_text()),
            pki.load_certificate((lab.dir / "client.crt").read_text()),
        )
    )
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.1)

    lab.bootstrap()
    output = lab.run("-y")
    assert f"re-signing {lab.cert}: expires in" in output
    assert "less than 1/6 of its" in output
    renewed = pki.load_certificate(lab.cert.read_text())
    assert renewed.serial_number != short.serial_number
    assert (renewed.not_valid_after_utc - datetime.now(UTC)).days >= 29
    assert lab.sign_requests() == 4  # both certificates, twice


def test_changed_identity_is_resigned_with_the_same_key_made_private_again(lab):
    lab.run("-y")
    key = lab.key.read_bytes()
    lab.key.chmod(0o644)
    lab.bootstrap("198.18.0.11")
    output = lab.run("-y", ips="127.0.0.1,198.18.0.11")
    assert stat.S_IMODE(lab.key.stat().st_mode) == 0o600
    assert f"re-signing {lab.cert}: SANs changed (+ip 198.18.0.11, -ip 198.18.0.10)" in output
    assert lab.key.read_bytes() == key
    moved = Identity(IDENTITY.cn, IDENTITY.dns_names, ("127.0.0.1", "198.18.0.11"))
    assert pki.identity_of_cert(lab.cert.read_text()) == moved


def test_certificates_fact_reads_every_file_and_flags_garbage(lab):
    lab.run("-y")
    (lab.dir / "broken.crt").write_text("not a certificate\n")
    command = Certificates().command(paths=f"{lab.dir}/*.crt /nonexistent/*.crt")
    lines = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    facts = Certificates().process(lines.splitlines())

    assert sorted(facts) == [
        str(lab.dir / n) for n in ("broken.crt", "ca.crt", "client.crt", "member.crt")
    ]
    member = facts[str(lab.cert)]
    assert (member["cn"], member["issuer"]) == ("lab-etcd-1", "CN=lab etcd CA")
    assert member["ip_addresses"] == ["127.0.0.1", "198.18.0.10"]
    assert member["days_left"] == 29 and "pem" not in member
    assert facts[str(lab.dir / "broken.crt")]["error"].startswith("unreadable certificate")


def test_shared_ca_bundle_is_written_once(lab):
    output = lab.run("-y")
    assert output.count(f"Starting operation: Host certificates | CA bundle {lab.ca}") == 1


def test_unreadable_key_is_refused_before_any_change(lab):
    lab.run("-y")
    lab.key.write_text("garbage\n")
    cert = lab.cert.read_bytes()
    done = subprocess.run(lab.command("-y"), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{lab.key} is not a private key openssl can read" in done.stdout + done.stderr
    assert lab.key.read_text() == "garbage\n" and lab.cert.read_bytes() == cert


def test_a_host_readdressed_since_the_bootstrap_is_refused_before_any_change(lab):
    lab.run("-y")
    files = {path: path.read_bytes() for path in lab.dir.iterdir()}
    for extra in ("--dry", "-y"):
        done = subprocess.run(
            lab.command(extra, ips="127.0.0.1,198.18.0.11"), capture_output=True, text=True
        )
        assert done.returncode != 0
        assert (
            f"@local: Vault's role renew-lab-etcd-1-member of lab/pki/etcd does not sign "
            f"{lab.cert} as the inventory names it (allowed_ip_sans_cidr): run `galley vault "
            "bootstrap --inventory` with this inventory first (nothing was changed)"
        ) in done.stdout + done.stderr
    assert {path: path.read_bytes() for path in lab.dir.iterdir()} == files
    assert lab.sign_requests() == 2


def test_a_key_its_renewal_replaces_while_the_deploy_signs_is_signed_again(lab):
    lab.run("-y")
    lab.cert.unlink()  # the member certificate must be signed again
    # The host's renewal replaces the key just after Vault signed the deploy's first CSR.
    racing = lab.deploy.read_text().replace(
        "vault=lazy_client(VaultSettings.from_data(host.data)),", "vault=racing,"
    )
    lab.deploy.write_text(
        racing.replace(
            "host_certificates(",
            "import subprocess\n"
            "_client = lazy_client(VaultSettings.from_data(host.data))\n"
            "_raced = []\n"
            "def racing():\n"
            "    client = _client()\n"
            "    sign = client.secrets.pki.sign_certificate\n"
            "    def sign_then_replace_the_key(*args, **kwargs):\n"
            "        answer = sign(*args, **kwargs)\n"
            "        if not _raced:\n"
            "            _raced.append(1)\n"
            f"            subprocess.run('openssl genpkey {GENPKEY_OPTIONS} -out "
            f"{lab.key}.new && mv {lab.key}.new {lab.key}', shell=True, check=True)\n"
            "        return answer\n"
            "    client.secrets.pki.sign_certificate = sign_then_replace_the_key\n"
            "    return client\n"
            "host_certificates(",
            1,
        )
    )
    output = lab.run("-y")
    assert f"{lab.key} was replaced while signing (its renewal): signing again" in output
    key = serialization.load_pem_private_key(lab.key.read_bytes(), password=None)
    assert pki.load_certificate(lab.cert.read_text()).public_key() == key.public_key()
    assert not list(lab.dir.glob("*.galley-*"))
    assert lab.sign_requests() == 2 + 2  # the first run's two, then the member twice
