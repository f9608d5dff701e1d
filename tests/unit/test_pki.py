"""galley.vault.pki: re-sign decisions, identities, the deploy policy, and bootstrap/sign against a
real OpenBao (the `vault` fixture of tests/conftest.py)."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

import hvac
import hvac.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galley.components.etcd import member_identity as etcd_member_identity
from galley.ops import vault_bootstrap
from galley.vault import pki, setup
from galley.vault.client import VaultError
from galley.vault.pki import Identity, resign_reason

ROLES = vault_bootstrap.plan("lab").roles

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
MEMBER = etcd_member_identity("lab-etcd-1", "198.18.0.10")


def _name(cn: str, organization: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organization]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _with_sans(builder, identity: Identity):
    """The certificate or CSR builder with the identity's SANs; no extension when it has none."""
    names = [x509.DNSName(name) for name in identity.dns_names] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.ip_addresses
    ]
    if not names:
        return builder
    return builder.add_extension(x509.SubjectAlternativeName(names), critical=False)


class _CA:
    def __init__(self, cn: str = "lab etcd CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=365))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self,
        identity: Identity,
        issued: datetime = NOW - timedelta(days=1),
        lifetime: timedelta = timedelta(days=30),
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(identity.cn, identity.organization))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued)
            .not_valid_after(issued + lifetime)
        )
        cert = _with_sans(builder, identity).sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def ca() -> _CA:
    return _CA()


def test_fresh_certificate_needs_no_resign(ca):
    assert resign_reason(ca.issue(MEMBER), MEMBER, ca.pem, NOW) is None


def test_missing_and_unreadable_certificates(ca):
    assert resign_reason(None, MEMBER, ca.pem, NOW) == "no certificate"
    assert resign_reason("garbage\n", MEMBER, ca.pem, NOW) == "unreadable certificate"


def test_changed_ip_is_named(ca):
    moved = etcd_member_identity("lab-etcd-1", "198.18.0.99")
    assert resign_reason(ca.issue(MEMBER), moved, ca.pem, NOW) == (
        "SANs changed (+ip 198.18.0.99, -ip 198.18.0.10)"
    )


def test_changed_dns_and_cn(ca):
    renamed = etcd_member_identity("lab-etcd-2", "198.18.0.10")
    assert resign_reason(ca.issue(MEMBER), renamed, ca.pem, NOW) == (
        "CN changed (lab-etcd-1 -> lab-etcd-2)"
    )
    extra_name = Identity(MEMBER.cn, (*MEMBER.dns_names, "etcd.lab"), MEMBER.ip_addresses)
    assert resign_reason(ca.issue(MEMBER), extra_name, ca.pem, NOW) == (
        "SANs changed (+dns etcd.lab)"
    )


def test_changed_organization(ca):
    node = Identity("system:node:lab-worker-1", organization=("system:nodes",))
    old = Identity("system:node:lab-worker-1")
    assert resign_reason(ca.issue(old), node, ca.pem, NOW) == (
        "organization changed (none -> system:nodes)"
    )


def test_certificate_of_another_ca(ca):
    other = _CA("lab etcd CA")  # same name, different key
    assert resign_reason(other.issue(MEMBER), MEMBER, ca.pem, NOW) == "issued by a different CA"
    # A bundle holding both the new and the old CA accepts either.
    assert resign_reason(other.issue(MEMBER), MEMBER, ca.pem + other.pem, NOW) is None


def test_near_expiry_is_explained(ca):
    issued = NOW - timedelta(days=26, hours=20)
    assert resign_reason(ca.issue(MEMBER, issued), MEMBER, ca.pem, NOW) == (
        "expires in 3d 4h, less than 1/3 of its 30d lifetime left"
    )


def test_two_thirds_of_lifetime_is_the_threshold(ca):
    lifetime = timedelta(days=30)
    just_fine = ca.issue(MEMBER, NOW - lifetime * 2 / 3 + timedelta(minutes=1), lifetime)
    just_due = ca.issue(MEMBER, NOW - lifetime * 2 / 3 - timedelta(minutes=1), lifetime)
    assert resign_reason(just_fine, MEMBER, ca.pem, NOW) is None
    assert resign_reason(just_due, MEMBER, ca.pem, NOW).startswith("expires in 9d 23h")


def test_expired_certificate(ca):
    expired = ca.issue(MEMBER, NOW - timedelta(days=32))
    assert resign_reason(expired, MEMBER, ca.pem, NOW) == "expired 2d ago"


def test_certificate_of_another_key(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert = ca.issue(MEMBER, key=key)
    assert resign_reason(cert, MEMBER, ca.pem, NOW, public_key_pem=public.decode()) is None
    other = ca.issue(MEMBER)
    assert (
        resign_reason(other, MEMBER, ca.pem, NOW, public_key_pem=public.decode())
        == "certificate does not match the private key"
    )


def test_identity_of_cert_and_csr(ca):
    assert pki.identity_of_cert(ca.issue(MEMBER)) == MEMBER
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        _name("etcd-healthcheck-client", ("galley",))
    )
    builder = _with_sans(builder, Identity("x", ("a.example", "b.example"), ("10.0.0.1",)))
    csr = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    assert pki.identity_of_csr(csr) == Identity(
        "etcd-healthcheck-client", ("b.example", "a.example"), ("10.0.0.1",), ("galley",)
    )


def test_identity_normalises_names_and_rejects_bad_ips():
    assert Identity("a", ("y", "x", "y"), ("::1", "127.0.0.1")) == Identity(
        "a", ("x", "y"), ("127.0.0.1", "0:0:0:0:0:0:0:1")
    )
    with pytest.raises(ValueError):
        Identity("a", ip_addresses=("not-an-ip",))


def _blocks(name: str, paths: dict[str, str]) -> dict[str, str]:
    hcl = setup.render_policy(name, paths)
    blocks = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}', hcl))
    assert hcl.count("path ") == len(blocks)
    return {path: ",".join(re.findall(r'"([^"]+)"', caps)) for path, caps in blocks.items()}


CA_READS = {
    f"lab/pki/{mount}/{path}": "read"
    for mount in ("etcd", "k8s", "host")
    for path in ("ca/pem", "cert/ca")
}
# Every job's deploy gives its hosts a renewal credential (`galley.vault.renewal`).
HOST_IDENTITY = {"lab/pki/host/sign/host-identity": "update"}
LOCK = {"lab/kv/data/galley/lock": "create,read,update"}
# The etcd deploy writes it into etcd; `galley etcd restore` checks snapshots against it.
IDENTITY_READ = {"lab/kv/data/galley/cluster-identity": "read"}


def _signs(mount: str, *roles: str) -> dict[str, str]:
    return {f"lab/pki/{mount}/sign/{role}": "update" for role in roles}


def test_one_policy_per_job_grants_exactly_what_its_deploy_signs_and_reads():
    policies = vault_bootstrap.policies("lab")
    assert _blocks("lab-etcd", policies["lab-etcd"]) == {
        **_signs("etcd", "etcd-member", "etcd-healthcheck-client"),
        **HOST_IDENTITY,
        **CA_READS,
        **IDENTITY_READ,
        **LOCK,
    }
    assert _blocks("lab-control-plane", policies["lab-control-plane"]) == {
        **_signs("etcd", "kube-apiserver-etcd-client"),
        **_signs(
            "k8s",
            "kube-apiserver",
            "kube-apiserver-kubelet-client",
            "kube-controller-manager",
            "kube-scheduler",
            "control-plane-serving",
        ),
        **HOST_IDENTITY,
        **CA_READS,
        "lab/kv/data/kubernetes/service-account": "read",
        "lab/kv/data/kubernetes/encryption": "read",
        **LOCK,
    }
    assert _blocks("lab-workers", policies["lab-workers"]) == {
        **_signs("etcd", "flannel-etcd-client"),
        **_signs("k8s", "kubelet", "kubelet-serving", "flannel", "kube-proxy"),
        **HOST_IDENTITY,
        **CA_READS,
        **LOCK,
    }
    assert policies["lab-operator"] == {
        **_signs("k8s", "admin"),
        **{f"lab/pki/k8s/{path}": "read" for path in ("ca/pem", "cert/ca")},
        **{
            path: capability
            for mount in ("etcd", "k8s", "host")
            for path, capability in (
                (f"lab/pki/{mount}/certs", "list"),
                (f"lab/pki/{mount}/cert/*", "read"),
                (f"lab/pki/{mount}/revoke", "update"),
            )
        },
        "auth/lab/host-cert/certs/*": "delete",
        **LOCK,
        **IDENTITY_READ,
    }


def test_the_combined_deploy_policy_never_grants_the_admin_role():
    policies = vault_bootstrap.policies("lab")
    jobs = ("lab-etcd", "lab-control-plane", "lab-workers", "lab-monitoring")
    assert policies["lab-deploy"] == {k: v for job in jobs for k, v in policies[job].items()}
    assert not any("sign/admin" in path for path in policies["lab-deploy"])
    assert not any(
        "system:masters" in role.organization
        for role in ROLES
        if f"lab/pki/{role.mount}/sign/{role.name}" in policies["lab-workers"]
    )


def test_roles_table():
    roles = {role.name: role for role in ROLES}
    member = setup.role_params(roles["etcd-member"], "lab")
    client = setup.role_params(roles["etcd-healthcheck-client"], "lab")
    assert member["allowed_domains"] == ["lab-*"]
    assert member["allow_glob_domains"] and member["allow_ip_sans"] and member["allow_localhost"]
    assert member["server_flag"] and member["client_flag"]
    assert client["allowed_domains"] == ["etcd-healthcheck-client"]
    assert not client["server_flag"] and client["client_flag"]
    assert not client["allow_ip_sans"] and not client["allow_glob_domains"]
    assert client["allow_bare_domains"] and client["ttl"] == client["max_ttl"] == 720 * 3600
    custom = setup.PkiOptions(leaf_ttl="24h", allowed_names={"etcd-member": ("db-*", "etcd.lab")})
    assert setup.role_params(roles["etcd-member"], "lab", custom)["allowed_domains"] == [
        "db-*",
        "etcd.lab",
    ]
    assert setup.role_params(roles["etcd-member"], "lab", custom)["ttl"] == 24 * 3600
    for role in ROLES:
        params = setup.role_params(role, "lab")
        assert params["allow_any_name"] is False and params["allow_wildcard_certificates"] is False
        assert params["allow_subdomains"] is False and params["key_type"] == "ec"


def test_the_apiserver_role_allows_exact_names_only():
    (role,) = [r for r in ROLES if r.name == "kube-apiserver"]
    plain = setup.role_params(role, "lab")
    assert not plain["allow_glob_domains"]
    assert plain["allowed_domains"] == [
        "kube-apiserver",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    options = setup.PkiOptions(cluster_domain="k8s.internal", api_endpoint="api.lab.example")
    assert setup.role_params(role, "lab", options)["allowed_domains"][-2:] == [
        "kubernetes.default.svc.k8s.internal",
        "api.lab.example",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("720h", 2592000), ("1h30m", 5400), ("90s", 90), ("2d", 172800), (3600, 3600)],
)
def test_parse_duration(text, seconds):
    assert pki.parse_duration(text) == seconds


def test_parse_duration_rejects_nonsense():
    with pytest.raises(ValueError, match="not a duration"):
        pki.parse_duration("a week")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=30, seconds=30), "30d"),
        (timedelta(days=3, hours=4, minutes=5), "3d 4h"),
        (timedelta(hours=5, minutes=12), "5h 12m"),
        (timedelta(minutes=7, seconds=59), "7m"),
        (timedelta(seconds=40), "40s"),
    ],
)
def test_format_duration(delta, text):
    assert pki.format_duration(delta) == text


# Against a real OpenBao: `vault` is a root client of a server as fresh as a new one.


def _csr(identity: Identity) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(identity.cn))
    return (
        _with_sans(builder, identity)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def test_bootstrap_sets_up_and_is_a_no_op_when_re_run(vault):
    changes = vault_bootstrap.bootstrap(vault, "lab")
    assert changes[0] == "enabled PKI mount lab/pki/etcd"
    assert changes[1].startswith("generated root CA 'lab etcd CA' in lab/pki/etcd")
    assert changes[2] == "enabled PKI mount lab/pki/k8s"
    assert changes[3].startswith("generated root CA 'lab Kubernetes CA' in lab/pki/k8s")
    assert changes[4] == "enabled PKI mount lab/pki/host"
    assert changes[5].startswith("generated root CA 'lab host identity CA' in lab/pki/host")
    assert changes[6:] == [
        *(f"created role {role.name} in lab/pki/{role.mount}" for role in ROLES),
        "enabled KV v2 mount lab/kv",
        "generated lab/kv/galley/cluster-identity",
        "generated lab/kv/kubernetes/service-account",
        "generated lab/kv/kubernetes/encryption",
        *(f"wrote policy {name}" for name in vault_bootstrap.policies("lab")),
        "enabled cert auth method auth/lab/host-cert",
    ]
    ca = pki.read_ca(vault, "lab/pki/etcd")
    assert vault_bootstrap.bootstrap(vault, "lab") == []
    assert pki.read_ca(vault, "lab/pki/etcd") == ca  # the root CA is not regenerated


def test_bootstrap_reports_only_roles_that_differ(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    shorter = setup.PkiOptions(leaf_ttl="24h")
    assert vault_bootstrap.bootstrap(vault, "lab", shorter) == [
        f"updated role {role.name} in lab/pki/{role.mount} (ttl)" for role in ROLES
    ]
    assert vault_bootstrap.bootstrap(vault, "lab", shorter) == []


def test_sign_member_certificate(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    signed = pki.sign(vault, "lab/pki/etcd", "etcd-member", _csr(MEMBER), ttl="1h")
    assert signed.certificate.endswith("-----END CERTIFICATE-----\n")
    assert signed.ca_bundle == pki.read_ca(vault, "lab/pki/etcd")
    assert pki.identity_of_cert(signed.certificate) == MEMBER
    assert resign_reason(signed.certificate, MEMBER, signed.ca_bundle, datetime.now(UTC)) is None


def test_sign_client_certificate(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    client = Identity("etcd-healthcheck-client")
    signed = pki.sign(vault, "lab/pki/etcd", "etcd-healthcheck-client", _csr(client))
    assert pki.identity_of_cert(signed.certificate) == client
    usages = pki.load_certificate(signed.certificate).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert list(usages.value) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]


def test_sign_refusal_names_mount_role_and_vault_reason(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    with pytest.raises(VaultError) as raised:
        pki.sign(vault, "lab/pki/etcd", "etcd-healthcheck-client", _csr(Identity("kube-scheduler")))
    assert str(raised.value) == (
        "Vault refused to sign with role etcd-healthcheck-client of lab/pki/etcd: "
        "common name kube-scheduler not allowed by this role"
    )


def test_read_ca_before_bootstrap_says_what_to_do(vault):
    vault.sys.enable_secrets_engine("pki", path="lab/pki/etcd")
    with pytest.raises(
        VaultError, match="lab/pki/etcd has no CA yet: run galley's Vault bootstrap"
    ):
        pki.read_ca(vault, "lab/pki/etcd")


def test_bootstrap_converges_a_role_loosened_by_hand(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    role = vault.secrets.pki.read_role("kubelet", mount_point="lab/pki/k8s")["data"]
    loosened = role | {"allow_any_name": True, "allowed_uri_sans": ["spiffe://*"]}
    vault.secrets.pki.create_or_update_role("kubelet", loosened, mount_point="lab/pki/k8s")
    assert vault_bootstrap.bootstrap(vault, "lab") == [
        "updated role kubelet in lab/pki/k8s (allow_any_name, allowed_uri_sans)"
    ]
    role = vault.secrets.pki.read_role("kubelet", mount_point="lab/pki/k8s")["data"]
    assert (role["allow_any_name"], role["allowed_uri_sans"]) == (False, [])


def _token(vault, policy: str) -> hvac.Client:
    token = vault.auth.token.create(policies=[policy])["auth"]["client_token"]
    return hvac.Client(url=vault.url, token=token, verify=vault.session.verify)


def test_a_workers_token_gets_only_the_workers_identities(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    workers = _token(vault, "lab-workers")
    node = Identity("system:node:lab-worker-2", organization=("system:nodes",))
    assert pki.identity_of_cert(pki.sign(workers, "lab/pki/k8s", "kubelet", _csr(node)).certificate)
    refused = [
        ("lab/pki/k8s", "admin", Identity("admin", organization=("system:masters",))),
        ("lab/pki/k8s", "kube-apiserver-kubelet-client", Identity("kube-apiserver-kubelet-client")),
        ("lab/pki/etcd", "etcd-member", MEMBER),
        ("lab/pki/etcd", "kube-apiserver-etcd-client", Identity("kube-apiserver-etcd-client")),
    ]
    for mount, role, identity in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            workers.secrets.pki.sign_certificate(
                role, _csr(identity), identity.cn, mount_point=mount
            )
    with pytest.raises(hvac.exceptions.Forbidden):
        workers.secrets.kv.v2.read_secret_version(
            "kubernetes/service-account", mount_point="lab/kv", raise_on_deleted_version=True
        )
    outsider = Identity("system:node:attacker", organization=("system:nodes",))
    with pytest.raises(VaultError, match="common name system:node:attacker not allowed"):
        pki.sign(workers, "lab/pki/k8s", "kubelet", _csr(outsider))


def test_no_deploy_token_can_sign_system_masters_or_a_foreign_api_name(vault):
    options = setup.PkiOptions(api_endpoint="api.lab.example")
    vault_bootstrap.bootstrap(vault, "lab", options)
    deploy = _token(vault, "lab-deploy")
    admin = Identity("admin", organization=("system:masters",))
    with pytest.raises(hvac.exceptions.Forbidden):
        deploy.secrets.pki.sign_certificate(
            "admin", _csr(admin), "admin", mount_point="lab/pki/k8s"
        )
    foreign = Identity("kube-apiserver", ("api.lab.attacker.example",))
    with pytest.raises(VaultError, match=r"api\.lab\.attacker\.example not allowed by this role"):
        pki.sign(deploy, "lab/pki/k8s", "kube-apiserver", _csr(foreign))
    own = Identity("kube-apiserver", ("api.lab.example", "kubernetes.default.svc.cluster.local"))
    assert pki.sign(deploy, "lab/pki/k8s", "kube-apiserver", _csr(own)).certificate
    operator = _token(vault, "lab-operator")
    assert pki.sign(operator, "lab/pki/k8s", "admin", _csr(admin)).certificate
