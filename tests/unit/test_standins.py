"""The lab's stand-ins for the Kubernetes server binaries and flanneld, run as the droplets run
them: built into the mirror's zip application and started with Debian's /usr/bin/python3."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galley.lab.artifacts import standin_zipapp
from galley.lab.standins import yamlish

KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


# --- helpers ---------------------------------------------------------------------------------


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CA:
    """A throw-away CA writing certificate/key pairs into a directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.key = directory, ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)
        self.path = directory / f"{name}.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _sign(self, subject, public_key, ca=False, ips=()):
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ips:
            names = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue(self, name: str, ips=("127.0.0.1",)) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = self._sign(subject, key.public_key(), ips=ips)
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem(key))
        return cert_path, key_path


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """The stand-ins as the mirror serves them, installed under their upstream names."""
    directory = tmp_path_factory.mktemp("bin")
    built = {"kube": standin_zipapp("kube"), "flanneld": standin_zipapp("flanneld")}
    paths = {}
    for name in (*KUBE, "flanneld"):
        path = directory / name
        path.write_bytes(built["flanneld" if name == "flanneld" else "kube"])
        path.chmod(0o755)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = CA(directory, "kubernetes-ca"), CA(directory, "other-ca")
    etcd_ca = CA(directory, "etcd-ca")
    result = {"ca": ca.path, "etcd-ca": etcd_ca.path}
    for name, issuer in (("apiserver", ca), ("admin", ca), ("intruder", other)):
        result[f"{name}.crt"], result[f"{name}.key"] = issuer.issue(name)
    result["etcd.crt"], result["etcd.key"] = etcd_ca.issue("etcd")
    result["etcd-client.crt"], result["etcd-client.key"] = etcd_ca.issue("kube-apiserver-etcd")
    sa = ec.generate_private_key(ec.SECP256R1())
    result["sa.key"] = directory / "sa.key"
    result["sa.key"].write_bytes(_pem(sa))
    result["sa.pub"] = directory / "sa.pub"
    result["sa.pub"].write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(program: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=20)


def kubeconfig(path: Path, pki: dict[str, Path], user: str = "admin", kind: str = "Config") -> Path:
    """A kubeconfig in the shape kubectl writes, certificates inline."""

    def data(name: str) -> str:
        return base64.b64encode(pki[name].read_bytes()).decode()

    path.write_text(
        f"""apiVersion: v1
kind: {kind}
clusters:
- cluster:
    certificate-authority-data: {data("ca")}
    server: https://127.0.0.1:6443
  name: lab
contexts:
- context:
    cluster: lab
    user: {user}
  name: {user}@lab
current-context: {user}@lab
preferences: {{}}
users:
- name: {user}
  user:
    client-certificate-data: {data(f"{user}.crt")}
    client-key-data: {data(f"{user}.key")}
"""
    )
    return path


def get(port: int, path: str, cert=None, key=None, ca=None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read().decode()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, ssl.SSLError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


# --- YAML subset -----------------------------------------------------------------------------


def test_yaml_reader_reads_the_shapes_of_kubernetes_config_files():
    text = """---
# a comment
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  x509: {clientCAFile: "/etc/kubernetes/pki/ca.crt"}
clusterDNS:
  - 10.32.0.10
healthzPort: 10248
healthzBindAddress: '127.0.0.1'
evictionHard: {}
tlsCipherSuites: [TLS_AES_128_GCM_SHA256, "x y"]
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: key1
        secret: "c2VjcmV0 # not a comment"
  - identity: {}
empty:
ratio: 0.5
"""
    assert yamlish.loads(text) == {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "clusterDNS": ["10.32.0.10"],
        "healthzPort": 10248,
        "healthzBindAddress": "127.0.0.1",
        "evictionHard": {},
        "tlsCipherSuites": ["TLS_AES_128_GCM_SHA256", "x y"],
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aescbc": {"keys": [{"name": "key1", "secret": "c2VjcmV0 # not a comment"}]}},
                    {"identity": {}},
                ],
            }
        ],
        "empty": None,
        "ratio": 0.5,
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a: |\n  text\n", "block scalars"),
        ("a:\n\tb: 1\n", "tabs"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: 1\n---\nb: 2\n", "one YAML document"),
        ("a: &anchor 1\n", "unsupported"),
        ("a: 1\n  b: 2\n", "indentation"),
    ],
)
def test_yaml_reader_refuses_what_it_does_not_support(text, error):
    with pytest.raises(yamlish.YamlError, match=error):
        yamlish.loads(text)


# --- flags and --version ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary", "flags"),
    [
        (
            "kube-apiserver",
            ["--etcd-servers=https://127.0.0.1:2379", "--allow-privileged", "-v", "2"],
        ),
        ("kube-controller-manager", ["--cluster-cidr", "10.200.0.0/16", "--leader-elect=false"]),
        ("kube-scheduler", ["--config=/etc/kubernetes/kube-scheduler.yaml", "--v=2"]),
        ("kubelet", ["--config=/var/lib/kubelet/config.yaml", "--register-node=true"]),
        ("kube-proxy", ["--config", "/var/lib/kube-proxy/config.yaml", "--masquerade-all"]),
    ],
)
def test_real_flags_are_accepted_and_version_is_the_pinned_one(programs, binary, flags):
    done = run(programs[binary], *flags, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, "Kubernetes v1.33.5\n", "")


@pytest.mark.parametrize("binary", KUBE)
def test_unknown_flag_fails_like_cobra(programs, binary):
    done = run(programs[binary], "--no-such-flag=1")
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "Error: unknown flag: --no-such-flag"


@pytest.mark.parametrize(
    ("binary", "args", "message"),
    [
        ("kubelet", ["--etcd-servers=x"], "Error: unknown flag: --etcd-servers"),
        ("kube-proxy", ["--kubeconfig"], "Error: flag needs an argument: --kubeconfig"),
        ("kube-apiserver", ["-x"], "Error: unknown shorthand flag: 'x' in -x"),
        (
            "kube-apiserver",
            ["--anonymous-auth=maybe"],
            'Error: invalid argument "maybe" for "--anonymous-auth" flag: '
            'strconv.ParseBool: parsing "maybe": invalid syntax',
        ),
        ("kube-scheduler", ["extra"], 'Error: "kube-scheduler" does not take any arguments'),
    ],
)
def test_bad_command_lines_are_refused(programs, binary, args, message):
    done = run(programs[binary], *args)
    assert done.returncode == 1
    assert done.stderr.startswith(message)


def test_flanneld_flags_and_version(programs):
    done = run(programs["flanneld"], "--iface=eth0", "-ip-masq", "--version")
    assert (done.returncode, done.stderr) == (0, "v0.26.7\n")
    bad = run(programs["flanneld"], "--no-such-flag")
    assert bad.returncode == 2
    assert bad.stderr.startswith("flag provided but not defined: -no-such-flag\n")


# --- file checks -----------------------------------------------------------------------------


def apiserver_args(pki, port: int, etcd: str = "https://127.0.0.1:1") -> list[str]:
    return [
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--etcd-servers={etcd}",
        f"--etcd-cafile={pki['etcd-ca']}",
        f"--etcd-certfile={pki['etcd-client.crt']}",
        f"--etcd-keyfile={pki['etcd-client.key']}",
        f"--tls-cert-file={pki['apiserver.crt']}",
        f"--tls-private-key-file={pki['apiserver.key']}",
        f"--client-ca-file={pki['ca']}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki['sa.pub']}",
        f"--service-account-signing-key-file={pki['sa.key']}",
    ]


def test_apiserver_refuses_a_certificate_with_another_key(programs, pki):
    args = apiserver_args(pki, free_port())
    args[7] = f"--tls-private-key-file={pki['admin.key']}"
    done = run(programs["kube-apiserver"], *args)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: --tls-cert-file/--tls-private-key-file: {pki['apiserver.crt']} and "
        f"{pki['admin.key']}: private key does not match public key\n"
    )


def test_apiserver_refuses_a_missing_file_and_missing_required_flags(programs, pki, tmp_path):
    args = [*apiserver_args(pki, free_port()), f"--encryption-provider-config={tmp_path}/no"]
    done = run(programs["kube-apiserver"], *args)
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: --encryption-provider-config: open {tmp_path}/no: no such file or directory\n",
    )
    bare = run(programs["kube-apiserver"], f"--tls-cert-file={pki['apiserver.crt']}")
    assert bare.stderr.startswith("Error: [--etcd-servers must be specified, ")


def test_config_files_need_their_apiversion_and_kind(programs, pki, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n")
    done = run(programs["kubelet"], f"--config={config}", "--kubeconfig=/x")
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: --config: {config}: expected apiVersion kubelet.config.k8s.io/v1beta1 kind "
        "KubeletConfiguration, got apiVersion kubelet.config.k8s.io/v1 kind KubeletConfiguration\n",
    )


def test_kubeconfigs_are_checked_down_to_the_client_key(programs, pki, tmp_path):
    proxy_config = tmp_path / "proxy.yaml"
    good = kubeconfig(tmp_path / "good.kubeconfig", pki)
    wrong_kind = kubeconfig(tmp_path / "wrong.kubeconfig", pki, kind="Configuration")
    mismatched = tmp_path / "mismatched.kubeconfig"
    key = base64.b64encode(pki["admin.key"].read_bytes()).decode()
    other = base64.b64encode(pki["intruder.key"].read_bytes()).decode()
    mismatched.write_text(good.read_text().replace(key, other))

    def start(path: Path) -> subprocess.CompletedProcess:
        proxy_config.write_text(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
            f"clientConnection:\n  kubeconfig: {path}\nhealthzBindAddress: 192.0.2.1:10256\n"
        )
        return run(programs["kube-proxy"], f"--config={proxy_config}")

    assert "expected apiVersion v1 kind Config, got apiVersion v1 kind Configuration" in (
        start(wrong_kind).stderr
    )
    assert start(mismatched).stderr == (
        f"Error: --config clientConnection.kubeconfig: {mismatched}: user 'admin': "
        "private key does not match public key\n"
    )
    # The good kubeconfig passes; binding an address this host lacks is what fails then.
    assert start(good).stderr.startswith("Error: [Errno 99] Cannot assign requested address")


# --- serving ---------------------------------------------------------------------------------


def test_kubelet_serves_healthz_over_http_and_tls(programs, pki, tmp_path):
    healthz, port = free_port(), free_port()
    config = tmp_path / "kubelet.yaml"
    config.write_text(
        f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {port}
healthzPort: {healthz}
healthzBindAddress: 127.0.0.1
authentication:
  x509:
    clientCAFile: {pki["ca"]}
tlsCertFile: {pki["apiserver.crt"]}
tlsPrivateKeyFile: {pki["apiserver.key"]}
"""
    )
    args = [f"--config={config}", f"--kubeconfig={kubeconfig(tmp_path / 'k', pki)}"]
    kubelet = subprocess.Popen([programs["kubelet"], *args], stderr=subprocess.PIPE, text=True)
    try:

        def plain() -> str:
            connection = http.client.HTTPConnection("127.0.0.1", healthz, timeout=5)
            connection.request("GET", "/healthz")
            return connection.getresponse().read().decode()

        assert wait_for(plain) == "ok"
        assert get(port, "/healthz", ca=pki["ca"]) == (200, "ok")
    finally:
        kubelet.terminate()
        assert kubelet.wait(timeout=10) == 0


@pytest.fixture
def etcd(tmp_path, pki, etcd_release):
    """A real etcd serving TLS on 127.0.0.1 that a test can stop and start again."""
    client, peer = f"https://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    command = [
        str(etcd_release / "etcd"),
        "--name=standin-test",
        f"--data-dir={tmp_path / 'etcd-data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=standin-test={peer}",
        "--client-cert-auth",
        f"--trusted-ca-file={pki['etcd-ca']}",
        f"--cert-file={pki['etcd.crt']}",
        f"--key-file={pki['etcd.key']}",
    ]
    log = (tmp_path / "etcd.log").open("w")
    state = {"process": None, "endpoint": client, "etcdctl": str(etcd_release / "etcdctl")}

    def start() -> None:
        state["process"] = subprocess.Popen(command, stdout=log, stderr=log)

    def stop() -> None:
        state["process"].terminate()
        state["process"].wait(timeout=10)

    state["start"], state["stop"] = start, stop
    start()
    try:
        yield state
    finally:
        stop()
        log.close()


def test_apiserver_health_follows_the_real_etcd_and_client_certificates(programs, pki, etcd):
    port = free_port()
    args = apiserver_args(pki, port, etcd["endpoint"])
    apiserver = subprocess.Popen([programs["kube-apiserver"], *args], stderr=subprocess.PIPE)
    admin = {"cert": pki["admin.crt"], "key": pki["admin.key"], "ca": pki["ca"]}
    try:
        assert wait_for(lambda: get(port, "/healthz", **admin) == (200, "ok"))
        assert get(port, "/healthz", ca=pki["ca"]) == (200, "ok")  # anonymous may ask
        status, body = get(port, "/version", ca=pki["ca"])
        assert (status, json.loads(body)["gitVersion"]) == (200, "v1.33.5")
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            get(port, "/healthz", cert=pki["intruder.crt"], key=pki["intruder.key"], ca=pki["ca"])

        etcd["stop"]()
        status, body = wait_for(lambda: (r := get(port, "/healthz", **admin))[0] == 500 and r)
        assert "[-]etcd failed: reason withheld" in body
        assert get(port, "/livez", **admin) == (200, "ok")

        etcd["start"]()
        assert wait_for(lambda: get(port, "/healthz", **admin) == (200, "ok"), timeout=15)
    finally:
        apiserver.terminate()
        assert apiserver.wait(timeout=10) == 0


def test_flanneld_in_etcd_mode_writes_the_subnet_lease(programs, pki, etcd, tmp_path):
    config = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
    tls = [
        f"--cacert={pki['etcd-ca']}",
        f"--cert={pki['etcd-client.crt']}",
        f"--key={pki['etcd-client.key']}",
    ]
    wait_for(
        lambda: (
            subprocess.run(
                [
                    etcd["etcdctl"],
                    f"--endpoints={etcd['endpoint']}",
                    *tls,
                    "put",
                    "/coreos.com/network/config",
                    config,
                ],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    )
    subnet_file, healthz = tmp_path / "run" / "subnet.env", free_port()
    flanneld = subprocess.Popen(
        [
            programs["flanneld"],
            f"--etcd-endpoints={etcd['endpoint']}",
            f"--etcd-cafile={pki['etcd-ca']}",
            f"--etcd-certfile={pki['etcd-client.crt']}",
            f"--etcd-keyfile={pki['etcd-client.key']}",
            "--public-ip=198.18.0.11",
            "--ip-masq",
            f"--subnet-file={subnet_file}",
            "--healthz-ip=127.0.0.1",
            f"--healthz-port={healthz}",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(subnet_file.exists)
        # 198.18.0.11 always gets the same /24 of the network.
        assert subnet_file.read_text() == (
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.228.1/24\n"
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        )
        connection = http.client.HTTPConnection("127.0.0.1", healthz, timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"flanneld is running"
    finally:
        flanneld.terminate()
        assert flanneld.wait(timeout=10) == 0
