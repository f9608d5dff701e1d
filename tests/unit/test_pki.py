"""galley.vault.pki: re-sign decisions, identities, the deploy policy, and bootstrap/sign against a
real OpenBao (the `vault` fixture of tests/conftest.py)."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galley.components import renewal_plan
from galley.components.etcd import member_identity as etcd_member_identity
from galley.ops import vault_bootstrap
from galley.vault import pki, setup
from galley.vault.client import VaultError
from galley.vault.pki import Identity, resign_reason
from galley.vault.renewal import RenewalCert
from tests.group_data import HOSTS, small_cluster

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


def _blocks(name: str, policy: setup.Policy) -> dict[str, str]:
    """Each path the rendered policy grants with its capabilities (and pinned parameters)."""
    hcl = setup.render_policy(name, policy)
    blocks = re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]([^}]*\}?)\s*\}', hcl)
    assert hcl.count("path ") == len(blocks)
    return {
        path: ",".join(re.findall(r'"([^"]+)"', caps)) + (" pinned" if rest.strip() else "")
        for path, caps, rest in blocks
    }


CA_READS = {
    f"lab/pki/{mount}/{path}": "read"
    for mount in ("etcd", "k8s", "host")
    for path in ("ca/pem", "cert/ca")
}
LOCK = {"lab/kv/data/galley/lock": "create,read,update"}
# The etcd deploy writes it into etcd; `galley etcd restore` checks snapshots against it.
IDENTITY_READ = {"lab/kv/data/galley/cluster-identity": "read"}
# What each job's deploy signs on each of its hosts (every host: its renewal's identity).
JOB_CERTS = {
    "lab-etcd": (
        "-etcd-",
        ("host-identity", "member", "healthcheck-client", "maintenance-client"),
    ),
    "lab-control-plane": (
        "-cp-",
        (
            "host-identity",
            "apiserver",
            "apiserver-etcd-client",
            "apiserver-kubelet-client",
            "kube-controller-manager",
            "kube-controller-manager-serving",
            "kube-scheduler",
            "kube-scheduler-serving",
        ),
    ),
    "lab-workers": (
        "-worker-",
        ("host-identity", "flannel", "kube-proxy", "kubelet", "kubelet-serving"),
    ),
    "lab-monitoring": ("-mon-", ("host-identity", "etcd-metrics", "kube-metrics")),
}
JOB_READS = {
    "lab-etcd": IDENTITY_READ,
    "lab-control-plane": {
        "lab/kv/data/kubernetes/service-account": "read",
        "lab/kv/data/kubernetes/encryption": "read",
    },
    "lab-workers": {},
    "lab-monitoring": {},
}
PLANS = {host.name: renewal_plan(host) for host in small_cluster()}


def test_one_policy_per_job_grants_exactly_its_hosts_own_roles_with_their_parameters():
    policies = vault_bootstrap.policies("lab", list(small_cluster()))
    for job, (word, stems) in JOB_CERTS.items():
        certs = [cert for name, plan in PLANS.items() if word in name for cert in plan.certs]
        assert sorted(cert.stem for cert in certs) == sorted(
            stem for name in HOSTS if word in name for stem in stems
        ), job
        policy = policies[job]
        assert policy.signs == {cert.sign_path: cert.sign_parameters() for cert in certs}, job
        assert _blocks(job, policy) == {
            **CA_READS,
            **JOB_READS[job],
            **{cert.role_path: "read" for cert in certs},
            **LOCK,
            **{cert.sign_path: "update pinned" for cert in certs},
        }, job
    assert _blocks("lab-operator", policies["lab-operator"]) == {
        "lab/pki/k8s/sign/admin": "update",
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
    assert _blocks("lab-break-glass", policies["lab-break-glass"]) == {
        "lab/pki/k8s/sign/break-glass": "update",
        **{f"lab/pki/k8s/{path}": "read" for path in ("ca/pem", "cert/ca")},
    }


def test_flannel_signs_an_etcd_client_only_in_etcd_mode():
    def workers(mode: str) -> set[str]:
        hosts = list(small_cluster(flannel_mode=mode))
        return {
            path.rsplit("/", 1)[1]
            for path in vault_bootstrap.policies("lab", hosts)["lab-workers"].signs
        }

    assert "renew-lab-worker-1-etcd-client" not in workers("kube")
    assert "renew-lab-worker-1-etcd-client" in workers("etcd")


def test_the_combined_deploy_policy_never_grants_the_admin_role():
    policies = vault_bootstrap.policies("lab", list(small_cluster()))
    jobs = ("lab-etcd", "lab-control-plane", "lab-workers", "lab-monitoring")
    assert policies["lab-deploy"].signs == {
        k: v for job in jobs for k, v in policies[job].signs.items()
    }
    assert policies["lab-deploy"].paths == {
        k: v for job in jobs for k, v in policies[job].paths.items()
    }
    assert not any("sign/admin" in path for path in policies["lab-deploy"].capabilities())


def test_each_host_role_allows_exactly_its_certificates_names():
    member = next(c for c in PLANS["lab-etcd-1"].certs if c.stem == "member")
    params = setup.host_role_params(member, setup.PkiOptions())
    assert params["allowed_domains"] == ["lab-etcd-1", "localhost"]
    assert params["allowed_ip_sans_cidr"] == [f"{ip}/32" for ip in member.identity.ip_addresses]
    assert "198.18.0.10/32" in params["allowed_ip_sans_cidr"]
    assert not params["allow_glob_domains"] and not params["allow_subdomains"]
    assert not params["use_csr_common_name"] and not params["use_csr_sans"]
    assert params["server_flag"] and params["client_flag"] and params["ttl"] == 720 * 3600
    client = next(c for c in PLANS["lab-etcd-1"].certs if c.stem == "healthcheck-client")
    params = setup.host_role_params(client, setup.PkiOptions())
    assert params["allowed_domains"] == ["etcd-healthcheck-client"]
    assert not params["server_flag"] and params["client_flag"] and not params["allow_ip_sans"]
    admin = setup.role_params(pki.ADMIN_ROLE)
    assert admin["allowed_domains"] == ["admin"]
    assert admin["organization"] == ["galley:cluster-admins"]
    assert admin["ttl"] == admin["max_ttl"] == 24 * 3600
    masters = setup.role_params(pki.BREAK_GLASS_ROLE)
    assert masters["organization"] == ["system:masters"]
    assert masters["ttl"] == masters["max_ttl"] == 3600
    for plan in PLANS.values():
        for cert in plan.certs:
            params = setup.host_role_params(cert, setup.PkiOptions())
            assert (
                params["allow_any_name"] is False and params["allow_wildcard_certificates"] is False
            )
            assert params["allow_glob_domains"] is False and params["key_type"] == "ec"


def test_the_apiserver_role_allows_exact_names_only():
    def names(**data) -> list[str]:
        host = small_cluster("lab-cp-1", **data).get_host("lab-cp-1")
        (cert,) = [c for c in renewal_plan(host).certs if c.stem == "apiserver"]
        return setup.host_role_params(cert, setup.PkiOptions())["allowed_domains"]

    assert names() == [
        "kube-apiserver",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ]
    assert {"kubernetes.default.svc.k8s.internal", "api.lab.example"} <= set(
        names(cluster_domain="k8s.internal", api_endpoint="api.lab.example")
    )


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
        "created role admin in lab/pki/k8s",
        "created role break-glass in lab/pki/k8s",
        "enabled KV v2 mount lab/kv",
        "generated lab/kv/galley/cluster-identity",
        "generated lab/kv/kubernetes/service-account",
        "generated lab/kv/kubernetes/encryption",
        "enabled cert auth method auth/lab/host-cert",
        *(f"wrote policy {name}" for name in vault_bootstrap.policies("lab", [])),
    ]
    ca = pki.read_ca(vault, "lab/pki/etcd")
    assert vault_bootstrap.bootstrap(vault, "lab") == []
    assert pki.read_ca(vault, "lab/pki/etcd") == ca  # the root CA is not regenerated


def test_bootstrap_reports_only_roles_that_differ(vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    shorter = small_cluster(etcd_cert_ttl="24h")
    # (The health check's client identity lives client_cert_ttl.)
    assert vault_bootstrap.bootstrap(vault, "lab", shorter) == [
        f"updated role renew-{host}-member in lab/pki/etcd (ttl)"
        for host in ("lab-etcd-1", "lab-etcd-2")
    ]
    assert vault_bootstrap.bootstrap(vault, "lab", shorter) == []


def test_bootstrap_retires_the_roles_every_host_once_shared(vault):
    vault_bootstrap.bootstrap(vault, "lab")
    for mount, role in (("etcd", "etcd-member"), ("k8s", "kubelet"), ("host", "host-identity")):
        vault.secrets.pki.create_or_update_role(
            role,
            {"allowed_domains": ["lab-*"], "allow_glob_domains": True},
            mount_point=f"lab/pki/{mount}",
        )
    assert sorted(vault_bootstrap.bootstrap(vault, "lab")) == [
        f"deleted role {role} in lab/pki/{mount} (retired: each host signs with roles of its own)"
        for mount, role in (("etcd", "etcd-member"), ("host", "host-identity"), ("k8s", "kubelet"))
    ]
    assert vault_bootstrap.bootstrap(vault, "lab") == []


def _own(host: str, stem: str) -> RenewalCert:
    return next(cert for cert in PLANS[host].certs if cert.stem == stem)


def _sign_own(vault, cert: RenewalCert, **parameters) -> pki.SignedCertificate:
    return pki.sign(
        vault,
        cert.mount,
        cert.role,
        _csr(cert.identity),
        parameters=cert.sign_parameters() | parameters,
    )


def test_sign_member_certificate(vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    member = _own("lab-etcd-1", "member")
    signed = _sign_own(vault, member)
    assert signed.certificate.endswith("-----END CERTIFICATE-----\n")
    assert signed.ca_bundle == pki.read_ca(vault, "lab/pki/etcd")
    assert pki.identity_of_cert(signed.certificate) == member.identity
    now = datetime.now(UTC)
    assert resign_reason(signed.certificate, member.identity, signed.ca_bundle, now) is None


def test_sign_client_certificate(vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    client = _own("lab-etcd-1", "healthcheck-client")
    signed = _sign_own(vault, client)
    assert pki.identity_of_cert(signed.certificate) == Identity("etcd-healthcheck-client")
    usages = pki.load_certificate(signed.certificate).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert list(usages.value) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]


def test_sign_refusal_names_mount_role_and_vault_reason(vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    with pytest.raises(VaultError) as raised:
        _sign_own(vault, _own("lab-etcd-1", "healthcheck-client"), common_name="kube-scheduler")
    assert str(raised.value) == (
        "Vault refused to sign with role renew-lab-etcd-1-healthcheck-client of lab/pki/etcd: "
        "common name kube-scheduler not allowed by this role"
    )


def test_read_ca_before_bootstrap_says_what_to_do(vault):
    vault.sys.enable_secrets_engine("pki", path="lab/pki/etcd")
    with pytest.raises(
        VaultError, match="lab/pki/etcd has no CA yet: run galley's Vault bootstrap"
    ):
        pki.read_ca(vault, "lab/pki/etcd")


def test_bootstrap_converges_a_role_loosened_by_hand(vault):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    name, mount = "renew-lab-worker-1-kubelet", "lab/pki/k8s"
    role = vault.secrets.pki.read_role(name, mount_point=mount)["data"]
    loosened = role | {"allow_any_name": True, "allowed_uri_sans": ["spiffe://*"]}
    vault.secrets.pki.create_or_update_role(name, loosened, mount_point=mount)
    assert vault_bootstrap.bootstrap(vault, "lab", small_cluster()) == [
        f"updated role {name} in {mount} (allow_any_name, allowed_uri_sans)"
    ]
    role = vault.secrets.pki.read_role(name, mount_point=mount)["data"]
    assert (role["allow_any_name"], role["allowed_uri_sans"]) == (False, [])
