"""The Vault stand-in, driven through hvac as galley's production code drives real Vault."""

import ipaddress
import itertools
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from galley.lab.vault_standin import Acl, StandinVault, parse_policy, serve

ROOT = "root-token-for-tests"
_names = itertools.count()


@pytest.fixture(scope="module")
def vault() -> Iterator[StandinVault]:
    standin = serve("127.0.0.1", 0, ROOT)
    yield standin
    standin.shutdown()


@pytest.fixture
def client(vault: StandinVault) -> hvac.Client:
    return hvac.Client(url=vault.url, token=ROOT)


@pytest.fixture
def pki(client: hvac.Client) -> str:
    """A fresh PKI mount with a 10-year EC root, as galley sets one up."""
    mount = f"lab/pki/t{next(_names)}"
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    client.secrets.pki.generate_root(
        "internal",
        "etcd-ca",
        extra_params={"ttl": "87600h", "key_type": "ec", "key_bits": 256},
        mount_point=mount,
    )
    return mount


def make_csr(cn: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), org: str = "") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def raw_get(vault: StandinVault, path: str, token: str = ROOT) -> requests.Response:
    return requests.get(f"{vault.url}/v1/{path}", headers={"X-Vault-Token": token}, timeout=5)


def test_health_reports_active_then_sealed_and_sealed_vault_refuses_requests(
    vault: StandinVault, client: hvac.Client
) -> None:
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True
    assert health["sealed"] is False
    assert health["standby"] is False
    assert client.sys.read_health_status(method="HEAD").status_code == 200
    client.sys.seal()
    try:
        sealed = client.sys.read_health_status(method="GET")
        assert sealed.status_code == 503
        assert sealed.json()["sealed"] is True
        with pytest.raises(hvac.exceptions.VaultDown) as excinfo:
            client.sys.list_mounted_secrets_engines()
        assert excinfo.value.errors == ["Vault is sealed"]
        assert client.sys.read_seal_status()["sealed"] is True
    finally:
        status = client.sys.submit_unseal_key("any-key")
    assert status["sealed"] is False
    assert status["t"] == 1
    assert client.sys.read_health_status(method="GET")["sealed"] is False


def test_enabling_a_mount_twice_is_refused_with_vaults_message(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine(
        "pki", path="lab/pki/twice", config={"max_lease_ttl": "87600h"}
    )
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.sys.enable_secrets_engine("pki", path="lab/pki/twice")
    assert excinfo.value.errors == ["path is already in use at lab/pki/twice/"]
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    assert mounts["secret/"]["options"] == {"version": "2"}  # as `vault server -dev` has it
    assert mounts["lab/pki/twice/"]["type"] == "pki"
    assert mounts["lab/pki/twice/"]["config"]["max_lease_ttl"] == 87600 * 3600
    client.sys.tune_mount_configuration("lab/pki/twice", max_lease_ttl="720h")
    assert client.sys.read_mount_configuration("lab/pki/twice")["data"]["max_lease_ttl"] == 2592000


def test_ca_pem_is_204_until_a_root_exists_and_a_second_root_keeps_the_default(
    client: hvac.Client,
) -> None:
    mount = f"lab/pki/t{next(_names)}"
    client.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "87600h"})
    assert client.secrets.pki.read_ca_certificate(mount_point=mount) == ""
    first = client.secrets.pki.generate_root(
        "internal", "first-ca", extra_params={"key_type": "ec"}, mount_point=mount
    )
    client.secrets.pki.generate_root(
        "internal", "second-ca", extra_params={"key_type": "ec"}, mount_point=mount
    )
    assert (
        client.secrets.pki.read_ca_certificate(mount_point=mount).strip()
        == (first["data"]["certificate"])
    )


def test_root_ttl_is_capped_by_the_mount_maximum_with_a_warning(client: hvac.Client) -> None:
    mount = f"lab/pki/t{next(_names)}"
    client.sys.enable_secrets_engine("pki", path=mount)  # system default max: 768h
    root = client.secrets.pki.generate_root(
        "internal", "short-ca", extra_params={"ttl": "87600h", "key_type": "ec"}, mount_point=mount
    )
    assert root["warnings"] == [
        'TTL "87600h0m0s" is longer than permitted maxTTL "768h0m0s", so maxTTL is being used'
    ]
    cert = x509.load_pem_x509_certificate(root["data"]["certificate"].encode())
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=767) < lifetime <= timedelta(hours=768)


def test_sign_issues_a_certificate_shaped_by_the_role_and_signed_by_the_ca(
    client: hvac.Client, pki: str
) -> None:
    role = client.secrets.pki.create_or_update_role(
        "member",
        extra_params={
            "allowed_domains": ["lab.internal"],
            "allow_subdomains": True,
            "organization": "galley-etcd",
            "max_ttl": "720h",
            "key_type": "any",
        },
        mount_point=pki,
    )
    assert role["data"]["allow_localhost"] is True
    assert role["data"]["max_ttl"] == 720 * 3600
    csr = make_csr(
        "etcd-1.lab.internal", dns=("localhost",), ips=("10.10.0.5", "127.0.0.1"), org="evil"
    )
    signed = client.secrets.pki.sign_certificate(
        "member", csr, "ignored.lab.internal", extra_params={"ttl": "24h"}, mount_point=pki
    )
    data = signed["data"]
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    ca = x509.load_pem_x509_certificate(data["issuing_ca"].encode())
    cert.verify_directly_issued_by(ca)
    assert client.secrets.pki.read_ca_certificate(mount_point=pki).strip() == data["issuing_ca"]
    assert data["ca_chain"] == [data["issuing_ca"]]
    assert not data["certificate"].endswith("\n")
    assert data["serial_number"] == ":".join(
        f"{cert.serial_number:x}".zfill(len(data["serial_number"]) // 3 * 2 + 2)[i : i + 2]
        for i in range(0, len(data["serial_number"]) // 3 * 2 + 2, 2)
    )
    assert cert.subject.rfc4514_string() == "CN=etcd-1.lab.internal,O=galley-etcd"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["etcd-1.lab.internal", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.10.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ekus) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=23) < lifetime <= timedelta(hours=24)
    assert data["expiration"] == int(cert.not_valid_after_utc.timestamp())


@pytest.mark.parametrize(
    ("role", "csr", "params", "message"),
    [
        (
            {"allowed_domains": "lab.internal"},
            make_csr("etcd-1.lab.internal"),
            {},
            "common name etcd-1.lab.internal not allowed by this role",
        ),
        (
            {"allowed_domains": "lab.internal", "allow_subdomains": True},
            make_csr("etcd-1.lab.internal", dns=("evil.example.com",)),
            {},
            "subject alternate name evil.example.com not allowed by this role",
        ),
        (
            {"allow_any_name": True},
            make_csr("system:node:etcd-1"),
            {},
            "common name system:node:etcd-1 not allowed by this role",
        ),
        (
            {"allow_any_name": True, "allow_ip_sans": False, "use_csr_sans": False},
            make_csr("etcd-1"),
            {"ip_sans": "10.0.0.1,10.0.0.2"},
            "IP Subject Alternative Names are not allowed in this role, "
            "but was provided [10.0.0.1 10.0.0.2]",
        ),
        (
            {"allow_any_name": True, "key_type": "rsa"},
            make_csr("etcd-1"),
            {},
            "role requires keys of type rsa",
        ),
    ],
)
def test_sign_refuses_what_the_role_does_not_allow(
    client: hvac.Client,
    pki: str,
    role: dict[str, object],
    csr: str,
    params: dict[str, str],
    message: str,
) -> None:
    client.secrets.pki.create_or_update_role(
        "strict", extra_params={"key_type": "any", **role}, mount_point=pki
    )
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.secrets.pki.sign_certificate(
            "strict", csr, "x", extra_params=params, mount_point=pki
        )
    assert excinfo.value.errors == [message]


def test_kubernetes_identity_needs_hostnames_unenforced(client: hvac.Client, pki: str) -> None:
    client.secrets.pki.create_or_update_role(
        "kubelet",
        extra_params={
            "allow_any_name": True,
            "enforce_hostnames": False,
            "organization": "system:nodes",
            "server_flag": False,
            "key_type": "ec",
        },
        mount_point=pki,
    )
    signed = client.secrets.pki.sign_certificate(
        "kubelet", make_csr("system:node:etcd-1"), "x", mount_point=pki
    )
    cert = x509.load_pem_x509_certificate(signed["data"]["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=system:node:etcd-1,O=system:nodes"
    ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ekus) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_unknown_role_and_role_ttl_validation(client: hvac.Client, pki: str) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.secrets.pki.sign_certificate("nope", make_csr("a"), "a", mount_point=pki)
    assert excinfo.value.errors == ["unknown role: nope"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.secrets.pki.create_or_update_role(
            "bad", extra_params={"ttl": "800h", "max_ttl": "720h"}, mount_point=pki
        )
    assert excinfo.value.errors == ['"ttl" value must be less than "max_ttl" value']


def test_sign_caps_ttl_at_role_max_with_a_warning_and_refuses_to_outlive_the_ca(
    client: hvac.Client, pki: str
) -> None:
    client.secrets.pki.create_or_update_role(
        "capped",
        extra_params={"allow_any_name": True, "max_ttl": "720h", "key_type": "ec"},
        mount_point=pki,
    )
    signed = client.secrets.pki.sign_certificate(
        "capped", make_csr("etcd-1"), "x", extra_params={"ttl": "2000h"}, mount_point=pki
    )
    assert signed["warnings"] == [
        'TTL "2000h0m0s" is longer than permitted maxTTL "720h0m0s", so maxTTL is being used'
    ]
    cert = x509.load_pem_x509_certificate(signed["data"]["certificate"].encode())
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=719) < lifetime <= timedelta(hours=720)

    client.secrets.pki.create_or_update_role(
        "long", extra_params={"allow_any_name": True, "key_type": "ec"}, mount_point=pki
    )
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.secrets.pki.sign_certificate(
            "long", make_csr("etcd-1"), "x", extra_params={"ttl": "90000h"}, mount_point=pki
        )
    assert excinfo.value.errors[0].startswith("cannot satisfy request, as TTL would result in")


def test_issue_returns_a_key_matching_the_certificate_and_revoke_marks_it(
    client: hvac.Client, pki: str
) -> None:
    client.secrets.pki.create_or_update_role(
        "client",
        extra_params={"allow_any_name": True, "key_type": "ec", "server_flag": False},
        mount_point=pki,
    )
    issued = client.secrets.pki.generate_certificate(
        "client", "etcd-healthcheck-client", mount_point=pki
    )["data"]
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    key = serialization.load_pem_private_key(issued["private_key"].encode(), password=None)
    assert issued["private_key_type"] == "ec"
    assert key.public_key() == cert.public_key()
    revoked = client.secrets.pki.revoke_certificate(issued["serial_number"], mount_point=pki)
    assert revoked["data"]["state"] == "revoked"
    assert client.read(f"{pki}/cert/{issued['serial_number']}")["data"]["revocation_time"] > 0
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.secrets.pki.revoke_certificate("01:02", mount_point=pki)
    assert excinfo.value.errors == ["certificate with serial 01:02 not found."]


def test_missing_objects_unmounted_routes_and_bad_tokens_have_vaults_shapes(
    vault: StandinVault, client: hvac.Client, pki: str
) -> None:
    missing = raw_get(vault, f"{pki}/roles/nope")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/json"
    assert missing.json() == {"errors": []}
    with pytest.raises(hvac.exceptions.InvalidPath) as excinfo:
        client.secrets.pki.read_role("nope", mount_point="not/mounted")
    assert excinfo.value.errors == [
        'no handler for route "not/mounted/roles/nope". route entry not found.'
    ]
    stranger = hvac.Client(url=vault.url, token="hvs.not-a-token")
    with pytest.raises(hvac.exceptions.Forbidden) as excinfo:
        stranger.sys.list_mounted_secrets_engines()
    assert excinfo.value.errors == ["permission denied", "invalid token"]
    assert stranger.is_authenticated() is False


def test_policy_limited_token_may_sign_but_not_touch_mounts(
    vault: StandinVault, client: hvac.Client, pki: str
) -> None:
    client.secrets.pki.create_or_update_role(
        "member", extra_params={"allow_any_name": True, "key_type": "ec"}, mount_point=pki
    )
    client.sys.create_or_update_acl_policy(
        "signer",
        f"""
        # signing only
        path "{pki}/sign/member" {{
          capabilities = ["update"]  // no read
        }}
        path "lab/pki/+/ca/pem" {{ capabilities = ["read"] }}
        """,
    )
    token = client.auth.token.create(policies=["signer"], ttl="1h")["auth"]["client_token"]
    signer = hvac.Client(url=vault.url, token=token)
    assert signer.auth.token.lookup_self()["data"]["policies"] == ["default", "signer"]
    signer.secrets.pki.sign_certificate("member", make_csr("etcd-1"), "x", mount_point=pki)
    assert signer.secrets.pki.read_ca_certificate(mount_point=pki).startswith("-----BEGIN")
    with pytest.raises(hvac.exceptions.Forbidden) as excinfo:
        signer.sys.list_mounted_secrets_engines()
    assert excinfo.value.errors == ["permission denied"]
    with pytest.raises(hvac.exceptions.Forbidden):
        signer.secrets.pki.read_role("member", mount_point=pki)
    capabilities = signer.sys.get_capabilities(
        [f"{pki}/sign/member", f"{pki}/roles/member", "sys/mounts"]
    )["data"]
    assert capabilities == {
        f"{pki}/sign/member": ["update"],
        f"{pki}/roles/member": ["deny"],
        "sys/mounts": ["deny"],
    }
    assert client.sys.get_capabilities(["sys/mounts"])["capabilities"] == ["root"]
    signer.auth.token.revoke_self()
    assert signer.is_authenticated() is False


def test_acl_picks_the_most_specific_rule() -> None:
    acl = Acl(
        parse_policy(
            """
            path "secret/*" { capabilities = ["read"] }
            path "secret/team/*" { capabilities = ["list"] }
            path "secret/+/config" { capabilities = ["update"] }
            path "secret/exact" { capabilities = ["create"] }
            /* block comment */
            path "secret/legacy" { policy = "write" }
            """
        )
    )
    assert acl.capabilities("secret/exact") == {"create"}
    # the first wildcard comes later in "secret/team/*", so it beats "secret/+/config"
    assert acl.capabilities("secret/team/config") == {"list"}
    # same first wildcard position: a path not ending in "*" beats one that does
    assert acl.capabilities("secret/other/config") == {"update"}
    assert acl.capabilities("secret/x") == {"read"}
    assert acl.capabilities("secret/legacy") == {"create", "read", "update", "delete", "list"}
    assert acl.capabilities("other/x") == frozenset()


def test_policy_with_an_unknown_capability_is_rejected(client: hvac.Client) -> None:
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        client.sys.create_or_update_acl_policy("bad", 'path "x" { capabilities = ["fly"] }')
    assert "invalid capability" in excinfo.value.errors[0]


def test_approle_login_yields_a_token_with_the_roles_policies(
    vault: StandinVault, client: hvac.Client
) -> None:
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_acl_policy("reader", 'path "kv/data/*" { capabilities = ["read"] }')
    client.auth.approle.create_or_update_approle("node", token_policies=["reader"], token_ttl="1h")
    role_id = client.auth.approle.read_role_id("node")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("node")["data"]["secret_id"]
    node = hvac.Client(url=vault.url)
    login = node.auth.approle.login(role_id, secret_id)
    assert login["auth"]["policies"] == ["default", "reader"]
    assert 3590 <= login["auth"]["lease_duration"] <= 3600
    assert node.auth.token.lookup_self()["data"]["meta"] == {"role_name": "node"}
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        hvac.Client(url=vault.url).auth.approle.login(role_id, "wrong")
    assert excinfo.value.errors == ["invalid role or secret ID"]


def test_kv_v2_keeps_versions(client: hvac.Client) -> None:
    client.sys.enable_secrets_engine("kv", path="lab/kv", options={"version": "2"})
    kv = client.secrets.kv.v2
    first = kv.create_or_update_secret("sa/key", {"pem": "one"}, mount_point="lab/kv")
    assert first["data"]["version"] == 1
    kv.create_or_update_secret("sa/key", {"pem": "two"}, mount_point="lab/kv")
    latest = kv.read_secret_version("sa/key", mount_point="lab/kv", raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"pem": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    old = kv.read_secret_version(
        "sa/key", version=1, mount_point="lab/kv", raise_on_deleted_version=True
    )
    assert old["data"]["data"] == {"pem": "one"}
    assert kv.read_secret_metadata("sa/key", mount_point="lab/kv")["data"]["current_version"] == 2
    assert kv.list_secrets("", mount_point="lab/kv")["data"]["keys"] == ["sa/"]
    with pytest.raises(hvac.exceptions.InvalidRequest) as excinfo:
        kv.create_or_update_secret("sa/key", {"pem": "x"}, cas=1, mount_point="lab/kv")
    assert excinfo.value.errors == ["check-and-set parameter did not match the current version"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("nope", mount_point="lab/kv", raise_on_deleted_version=True)


def test_cli_serves_until_sigterm() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["-m", "galley.lab.vault_standin", "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [sys.executable, *command, "--root-token", "cli-root"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip().endswith(f"http://127.0.0.1:{port}")
        cli = hvac.Client(url=f"http://127.0.0.1:{port}", token="cli-root")
        assert cli.is_authenticated()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
