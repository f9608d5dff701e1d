"""Least privilege enforced by OpenBao itself (issue 37): no job token and no host identity can
obtain a certificate another job's hosts hold or that names another host, not directly and
not by having a host identity made for another host and logging in with it. Table-driven
against the session's real OpenBao, both ways: every certificate a credential must not get is
refused (403), every one it needs is granted."""

from __future__ import annotations

from pathlib import Path

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galley.components import renewal_plan
from galley.ops import vault_bootstrap
from galley.vault.pki import Identity
from galley.vault.renewal import HostRenewal, RenewalCert
from tests.group_data import GROUPS, HOSTS, small_cluster

MASTERS = "lab/pki/k8s/sign/break-glass"
JOBS = {
    "lab-etcd": "etcd",
    "lab-control-plane": "control_plane",
    "lab-workers": "workers",
    "lab-monitoring": "monitoring",
}


def token_client(vault: hvac.Client, policy: str) -> hvac.Client:
    """A client of the same server holding a token with only ``policy``."""
    token = vault.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    return hvac.Client(url=vault.url, token=token, verify=vault.session.verify)


def csr(identity: Identity, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A CSR for ``identity``'s CN and SANs (a new key unless given)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(name) for name in identity.dns_names]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.cn)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


class Server:
    """The bootstrapped OpenBao, spoken to as a host and a deploy do: raw HTTP, status codes."""

    def __init__(self, vault: hvac.Client, openbao, tmp_path: Path) -> None:
        self.vault, self.openbao, self.tmp_path = vault, openbao, tmp_path
        self.csr = csr(Identity("anything"))  # the host roles take no name from a CSR

    def post(self, token: str, path: str, body: dict, **kwargs) -> requests.Response:
        return requests.post(
            f"{self.openbao.addr}/v1/{path}",
            json=body,
            headers={"X-Vault-Token": token} if token else {},
            verify=str(self.openbao.ca_cert),
            timeout=10,
            **kwargs,
        )

    def sign(self, token: str, cert: RenewalCert, **changed) -> requests.Response:
        return self.post(
            token, cert.sign_path, {"csr": self.csr, **cert.sign_parameters(), **changed}
        )

    def login(self, token: str, renewal: HostRenewal, as_host: str) -> str | None:
        """Have ``token`` sign ``renewal``'s host identity, then log in with it at
        ``as_host``'s login: the token that login gives, or None where either is refused."""
        identity = renewal.identity
        key = ec.generate_private_key(ec.SECP256R1())
        signed = self.post(
            token,
            identity.sign_path,
            {"csr": csr(identity.identity, key), **identity.sign_parameters()},
        )
        if signed.status_code != 200:
            return None
        key_file = self.tmp_path / f"{renewal.host}.key"
        cert_file = self.tmp_path / f"{renewal.host}.crt"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_file.write_text(signed.json()["data"]["certificate"])
        answer = self.post(
            "",
            "auth/lab/host-cert/login",
            {"name": as_host},
            cert=(str(cert_file), str(key_file)),
        )
        return answer.json()["auth"]["client_token"] if answer.status_code == 200 else None


# The hosts' renewals log in from here, as if the hosts' addresses were this machine's.
FROM_HERE = {"vault_renewal_source_cidrs": ["127.0.0.0/8"]}


@pytest.fixture
def server(vault, openbao, tmp_path) -> Server:
    vault_bootstrap.bootstrap(vault, "lab", small_cluster(**FROM_HERE))
    return Server(vault, openbao, tmp_path)


PLANS = {host.name: renewal_plan(host) for host in small_cluster()}
EVERY_CERT = [(host, cert) for host, plan in PLANS.items() for cert in plan.certs]


def _hosts_of(job: str) -> set[str]:
    return {name for name in HOSTS if GROUPS[JOBS[job]] in name}


def _granted(server: Server, token: str) -> set[tuple[str, str]]:
    """Every (host, certificate stem) of the cluster ``token`` gets signed."""
    granted = set()
    for host, cert in EVERY_CERT:
        status = server.sign(token, cert).status_code
        assert status in (200, 403), (host, cert.stem, status)
        if status == 200:
            granted.add((host, cert.stem))
    return granted


def _own(hosts: set[str]) -> set[tuple[str, str]]:
    return {(host, cert.stem) for host, cert in EVERY_CERT if host in hosts}


@pytest.mark.parametrize("job", JOBS)
def test_a_job_token_signs_exactly_its_own_hosts_certificates(server, job):
    token = token_client(server.vault, job).token
    assert _granted(server, token) == _own(_hosts_of(job))


def test_a_host_login_signs_exactly_that_hosts_certificates_and_no_job_climbs_through_one(
    server,
):
    for job in JOBS:
        token = token_client(server.vault, job).token
        for host, plan in PLANS.items():
            host_token = server.login(token, plan, host)
            if host not in _hosts_of(job):
                assert host_token is None, (job, host)  # its identity is never signed
                continue
            assert host_token is not None, (job, host)
            assert _granted(server, host_token) == _own({host}), (job, host)
            # An identity of the job's own host cannot log in as another host.
            for other in PLANS:
                if other != host:
                    assert server.login(token, plan, other) is None, (job, host, other)


def test_no_credential_gets_a_name_or_address_its_host_does_not_hold(server):
    worker = PLANS["lab-worker-1"]
    kubelet, serving = (
        next(c for c in worker.certs if c.stem == s) for s in ("kubelet", "kubelet-serving")
    )
    identity = worker.identity
    tokens = {
        "workers": token_client(server.vault, "lab-workers").token,
        "deploy": token_client(server.vault, "lab-deploy").token,
        "lab-worker-1": server.login(
            token_client(server.vault, "lab-workers").token, worker, "lab-worker-1"
        ),
    }
    attempts = {
        "another node's name": (kubelet, {"common_name": "system:node:lab-cp-1"}),
        "an etcd member's name": (
            serving,
            {"common_name": "lab-etcd-1", "alt_names": "lab-etcd-1"},
        ),
        "another host's address": (serving, {"ip_sans": HOSTS["lab-worker-2"]}),
        "an extra address": (serving, {"ip_sans": f"{HOSTS['lab-worker-1']},10.32.0.1"}),
        "a host identity across a dot": (identity, {"common_name": "lab-x.attacker.example"}),
        "a longer lifetime": (kubelet, {"ttl": "87600h"}),
        "a URI SAN": (kubelet, {"uri_sans": "spiffe://lab/x"}),
    }
    for who, token in tokens.items():
        assert token is not None
        for why, (cert, changed) in attempts.items():
            assert server.sign(token, cert, **changed).status_code == 403, (who, why)
        assert server.sign(token, kubelet).status_code == 200, who


def test_only_the_operator_signs_the_admin_and_only_the_control_plane_reads_its_keys(server):
    admin = {"csr": csr(Identity("admin")), "common_name": "admin"}
    masters = {"csr": csr(Identity("break-glass")), "common_name": "break-glass"}
    for policy in (*JOBS, "lab-deploy"):
        token = token_client(server.vault, policy).token
        assert server.post(token, "lab/pki/k8s/sign/admin", admin).status_code == 403, policy
        assert server.post(token, MASTERS, masters).status_code == 403, policy
        read = requests.get(
            f"{server.openbao.addr}/v1/lab/kv/data/kubernetes/service-account",
            headers={"X-Vault-Token": token},
            verify=str(server.openbao.ca_cert),
            timeout=10,
        )
        assert read.status_code == (200 if policy in ("lab-control-plane", "lab-deploy") else 403)
    operator = token_client(server.vault, "lab-operator").token
    assert server.post(operator, "lab/pki/k8s/sign/admin", admin).status_code == 200
    # system:masters: only the break-glass policy, which no other grants.
    assert server.post(operator, MASTERS, masters).status_code == 403
    break_glass = token_client(server.vault, "lab-break-glass").token
    assert server.post(break_glass, MASTERS, masters).status_code == 200
    assert server.post(break_glass, "lab/pki/k8s/sign/admin", admin).status_code == 403


def test_a_host_identity_logs_in_only_from_its_hosts_own_addresses(vault, openbao, tmp_path):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())  # each host's own addresses
    server = Server(vault, openbao, tmp_path)
    workers = token_client(vault, "lab-workers").token
    assert server.login(workers, PLANS["lab-worker-1"], "lab-worker-1") is None
    changes = vault_bootstrap.bootstrap(vault, "lab", small_cluster(**FROM_HERE))
    assert "updated cert login lab-worker-1 in auth/lab/host-cert (token_bound_cidrs)" in changes
    host_token = server.login(workers, PLANS["lab-worker-1"], "lab-worker-1")
    assert host_token is not None
    kubelet = next(c for c in PLANS["lab-worker-1"].certs if c.stem == "kubelet")
    assert server.sign(host_token, kubelet).status_code == 200
