"""The lab's stand-ins for the Kubernetes server binaries and flanneld, run as the droplets run
them: built into the mirror's zip application and started with Debian's /usr/bin/python3."""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from galley.components.kube_apiserver import KUBELET_API_ACCESS
from galley.lab.artifacts import (
    ARTIFACTS,
    KUBERNETES_BROKEN_VERSION,
    KUBERNETES_VERSION,
    build_all,
    standin_zipapp,
)
from galley.lab.standins import tables, yamlish
from galley.lab.standins.keepalive import KeptConnection
from galley.lab.state import CACHE_DIR
from galley.ops.admin import RBAC_BINDINGS, AdminFiles
from galley.ops.kubeapi import ApiError, KubeApi
from tests.standins.pki import CA
from tests.standins.pki import pem as _pem

KUBE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, Path]:
    """The stand-ins as the mirror serves them, installed under their upstream names."""
    directory = tmp_path_factory.mktemp("bin")
    built = {
        "kube": standin_zipapp("kube", "1.33.5"),
        "flanneld": standin_zipapp("flanneld", "0.26.7"),
    }
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
    for name, issuer in (("apiserver", ca), ("intruder", other), ("someone", ca)):
        result[f"{name}.crt"], result[f"{name}.key"] = issuer.issue(name)
    result["admin.crt"], result["admin.key"] = ca.issue("admin", group="system:masters")
    for node in ("worker-1", "worker-2", "worker-3"):
        result[f"{node}.crt"], result[f"{node}.key"] = ca.issue(
            node, user=f"system:node:{node}", group="system:nodes"
        )
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


def kubeconfig(
    path: Path, pki: dict[str, Path], user: str = "admin", kind: str = "Config", port: int = 6443
) -> Path:
    """A kubeconfig in the shape kubectl writes, certificates inline."""

    def data(name: str) -> str:
        return base64.b64encode(pki[name].read_bytes()).decode()

    path.write_text(
        f"""apiVersion: v1
kind: {kind}
clusters:
- cluster:
    certificate-authority-data: {data("ca")}
    server: https://127.0.0.1:{port}
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


def kubelet_args(directory: Path, pki, node: str = "admin", api_port: int = 6443):
    """A kubelet's command line (own config and kubeconfig) and its healthz and HTTPS ports."""
    healthz, port = free_port(), free_port()
    config = directory / f"kubelet-{node}.yaml"
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
    client = kubeconfig(directory / f"{node}.kubeconfig", pki, user=node, port=api_port)
    return [f"--config={config}", f"--kubeconfig={client}"], healthz, port


def plain_healthz(port: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_kubelet_serves_healthz_over_http_and_tls(programs, pki, tmp_path):
    args, healthz, port = kubelet_args(tmp_path, pki)
    kubelet = subprocess.Popen([programs["kubelet"], *args], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: plain_healthz(healthz)) == (200, "ok")
        assert get(port, "/healthz", ca=pki["ca"]) == (200, "ok")
    finally:
        kubelet.terminate()
        assert kubelet.wait(timeout=10) == 0


@contextlib.contextmanager
def running_etcd(etcd_release: Path, pki: dict[str, Path], directory: Path):
    """A real etcd serving TLS on 127.0.0.1 that a test can stop and start again."""
    client, peer = f"https://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    command = [
        str(etcd_release / "etcd"),
        "--name=standin-test",
        f"--data-dir={directory / 'etcd-data'}",
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
    log = (directory / "etcd.log").open("w")
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


@pytest.fixture
def etcd(tmp_path, pki, etcd_release):
    """A real etcd for one test."""
    with running_etcd(etcd_release, pki, tmp_path) as state:
        yield state


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


# --- the Kubernetes API slice and the kubelet's Node ----------------------------------------


@pytest.fixture(scope="module")
def built_kubelets(tmp_path_factory) -> dict[str, Path]:
    """The mirror's kubelet upgrade builds, built from their ARTIFACTS rows: {version: path}."""
    directory = tmp_path_factory.mktemp("mirror")
    rows = [
        a
        for a in ARTIFACTS
        if a.name in ("kubelet", "kube-proxy") and a.version != KUBERNETES_VERSION
    ]
    build_all(directory, directory, rows)
    paths = {}
    for row in rows:
        path = directory / row.upstream_path
        path.chmod(0o755)
        paths[f"{row.name} {row.version}"] = path
    return paths


@pytest.mark.parametrize(
    ("build", "printed"),
    [
        ("kubelet 1.33.6", "Kubernetes v1.33.6\n"),
        ("kube-proxy 1.33.6", "Kubernetes v1.33.6\n"),
        ("kubelet 1.33.7-galley.broken", "Kubernetes v1.33.7-galley.broken\n"),
        ("kube-proxy 1.33.7-galley.broken", "Kubernetes v1.33.7-galley.broken\n"),
    ],
)
def test_the_mirror_builds_report_the_version_of_their_upstream_path(
    built_kubelets, build, printed
):
    done = run(built_kubelets[build], "--version")
    assert (done.returncode, done.stdout) == (0, printed)


@pytest.fixture(scope="module")
def api(tmp_path_factory, programs, pki, etcd_release):
    """Two apiserver stand-ins sharing a real etcd, as on the two control-plane droplets."""
    directory = tmp_path_factory.mktemp("api")
    ports = [free_port(), free_port()]
    with running_etcd(etcd_release, pki, directory) as etcd:
        apiservers = [
            subprocess.Popen(
                [programs["kube-apiserver"], *apiserver_args(pki, port, etcd["endpoint"])],
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]
        try:
            for port in ports:
                wait_for(lambda port=port: get(port, "/healthz", ca=pki["ca"]) == (200, "ok"))
            yield {"ports": ports, "directory": directory, "etcd": etcd["endpoint"]}
        finally:
            for apiserver in apiservers:
                apiserver.terminate()
                apiserver.wait(timeout=10)


def call(port: int, pki, who: str, method: str, path: str, body=None, content_type=None):
    """An API request with ``who``'s client certificate; (status, decoded JSON)."""
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(pki[f"{who}.crt"], pki[f"{who}.key"])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    headers = {"Content-Type": content_type or "application/json"}
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def condition(node: dict, kind: str = "Ready") -> dict:
    (found,) = [c for c in node["status"]["conditions"] if c["type"] == kind]
    return found


def test_kubelet_registers_its_node_and_keeps_it_ready_until_stopped(
    built_kubelets, pki, api, tmp_path
):
    one, two = api["ports"]
    args, healthz, _ = kubelet_args(tmp_path, pki, "worker-1", api_port=one)
    args += ["--hostname-override=worker-1", "--node-ip=198.18.0.15"]
    kubelet = subprocess.Popen([built_kubelets["kubelet 1.33.6"], *args], stderr=subprocess.PIPE)
    try:
        # Registered through one apiserver, seen through the other.
        node = wait_for(
            lambda: (
                (r := call(two, pki, "admin", "GET", "/api/v1/nodes/worker-1"))[0] == 200 and r[1]
            )
        )
        assert node["kind"] == "Node"
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.6"
        assert node["status"]["addresses"] == [
            {"type": "InternalIP", "address": "198.18.0.15"},
            {"type": "Hostname", "address": "worker-1"},
        ]
        assert condition(node)["status"] == "True"
        assert plain_healthz(healthz) == (200, "ok")
        status, listed = call(one, pki, "admin", "GET", "/api/v1/nodes")
        assert (status, listed["kind"]) == (200, "NodeList")
        assert [n["metadata"]["name"] for n in listed["items"]] == ["worker-1"]

        # Cordon: a merge patch of spec.unschedulable, kept across the kubelet's heartbeats.
        status, cordoned = call(
            one,
            pki,
            "admin",
            "PATCH",
            "/api/v1/nodes/worker-1",
            {"spec": {"unschedulable": True}},
            "application/merge-patch+json",
        )
        assert status == 200 and cordoned["spec"]["unschedulable"] is True
        version = int(cordoned["metadata"]["resourceVersion"])
        assert version > int(node["metadata"]["resourceVersion"])
        beat = condition(cordoned)["lastHeartbeatTime"]
        later = wait_for(
            lambda: (
                (n := call(two, pki, "admin", "GET", "/api/v1/nodes/worker-1")[1])
                and condition(n)["lastHeartbeatTime"] != beat
                and n
            ),
        )
        assert later["spec"]["unschedulable"] is True
        assert int(later["metadata"]["resourceVersion"]) > version
        status, selected = call(
            two, pki, "admin", "GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue"
        )
        assert [n["metadata"]["name"] for n in selected["items"]] == ["worker-1"]
        # Uncordon with a strategic merge patch; a stale resourceVersion is a conflict.
        status, stale = call(
            two,
            pki,
            "admin",
            "PATCH",
            "/api/v1/nodes/worker-1",
            {"metadata": {"resourceVersion": str(version)}, "spec": {"unschedulable": None}},
            "application/strategic-merge-patch+json",
        )
        assert (status, stale["reason"]) == (409, "Conflict")
        status, uncordoned = call(
            two,
            pki,
            "admin",
            "PATCH",
            "/api/v1/nodes/worker-1",
            {"spec": {"unschedulable": None}},
            "application/strategic-merge-patch+json",
        )
        assert status == 200 and "unschedulable" not in uncordoned["spec"]
        assert condition(uncordoned)["status"] == "True"
    finally:
        kubelet.terminate()
        assert kubelet.wait(timeout=10) == 0
    # Stopped: no more heartbeats.
    last = condition(call(one, pki, "admin", "GET", "/api/v1/nodes/worker-1")[1])
    time.sleep(3)
    assert condition(call(one, pki, "admin", "GET", "/api/v1/nodes/worker-1")[1]) == last


def test_a_node_whose_heartbeat_is_stale_is_ready_unknown(pki, api):
    port = api["ports"][0]
    beat = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=11)
    stamp = beat.strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": "True",
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "worker-2"},
        "status": {"conditions": [ready]},
    }
    status, created = call(port, pki, "worker-2", "POST", "/api/v1/nodes", node)
    assert status == 201
    assert condition(created) == {
        **ready,
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastTransitionTime": (beat + datetime.timedelta(seconds=10)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    }
    assert (
        call(port, pki, "worker-2", "POST", "/api/v1/nodes", node)[1]["reason"] == "AlreadyExists"
    )
    # A fresh heartbeat makes it Ready again.
    fresh = {
        **ready,
        "lastHeartbeatTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    status, patched = call(
        port,
        pki,
        "worker-2",
        "PATCH",
        "/api/v1/nodes/worker-2/status",
        {"status": {"conditions": [fresh]}},
        "application/strategic-merge-patch+json",
    )
    assert (status, condition(patched)["status"]) == (200, "True")


def test_kubelets_may_modify_only_their_own_node(pki, api):
    port = api["ports"][1]
    patch = {"spec": {"unschedulable": True}}
    status, denied = call(
        port,
        pki,
        "worker-1",
        "PATCH",
        "/api/v1/nodes/worker-3",
        patch,
        "application/merge-patch+json",
    )
    assert (status, denied) == (
        403,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'nodes "worker-3" is forbidden: node "worker-1" is not allowed to modify '
            'node "worker-3"',
            "reason": "Forbidden",
            "details": {"name": "worker-3", "kind": "nodes"},
            "code": 403,
        },
    )
    node = {"metadata": {"name": "worker-3"}}
    assert call(port, pki, "worker-1", "POST", "/api/v1/nodes", node)[0] == 403
    assert call(port, pki, "worker-1", "GET", "/api/v1/nodes")[0] == 200
    status, denied = call(port, pki, "someone", "GET", "/api/v1/nodes")
    assert (status, denied["message"]) == (
        403,
        'nodes is forbidden: User "someone" cannot list resource "nodes" in API group "" at the '
        "cluster scope",
    )
    status, missing = call(port, pki, "admin", "GET", "/api/v1/nodes/worker-9")
    assert (status, missing["reason"], missing["message"]) == (
        404,
        "NotFound",
        'nodes "worker-9" not found',
    )


def test_evictions_respect_pod_disruption_budgets(pki, api):
    one, two = api["ports"]

    def pod(name: str, node: str, labels: dict, owner: str = "ReplicaSet") -> dict:
        owners = [
            {
                "apiVersion": "apps/v1",
                "kind": owner,
                "name": f"{name}-owner",
                "uid": f"uid-{name}",
                "controller": True,
            }
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "ownerReferences": owners},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        }

    seed = [
        pod("web-1", "node-a", {"app": "web"}),
        pod("web-2", "node-b", {"app": "web"}),
        pod("agent-a", "node-a", {"app": "agent"}, owner="DaemonSet"),
    ]
    for obj in seed:
        assert call(one, pki, "admin", "POST", "/api/v1/namespaces/shop/pods", obj)[0] == 201
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }
    budgets = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets"
    assert call(one, pki, "admin", "POST", budgets, pdb)[0] == 201

    status, on_a = call(
        two, pki, "admin", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"
    )
    assert (status, on_a["kind"]) == (200, "PodList")
    assert {
        p["metadata"]["name"]: p["metadata"]["ownerReferences"][0]["kind"] for p in on_a["items"]
    } == {"agent-a": "DaemonSet", "web-1": "ReplicaSet"}

    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "shop"},
    }
    evict = "/api/v1/namespaces/shop/pods/web-1/eviction"
    status, refused = call(two, pki, "admin", "POST", evict, eviction)
    assert (status, refused) == (
        429,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests",
            "details": {
                "causes": [
                    {
                        "reason": "DisruptionBudget",
                        "message": "The disruption budget web-pdb needs 2 healthy pods and "
                        "has 2 currently",
                    }
                ]
            },
            "code": 429,
        },
    )
    status, listed = call(one, pki, "admin", "GET", "/apis/policy/v1/poddisruptionbudgets")
    (shown,) = listed["items"]
    assert (shown["metadata"]["name"], shown["status"]["disruptionsAllowed"]) == ("web-pdb", 0)
    assert call(one, pki, "admin", "GET", "/api/v1/namespaces/shop/pods/web-1")[0] == 200

    # A budget allowing one disruption lets the eviction through: the pod is deleted.
    assert call(one, pki, "admin", "DELETE", f"{budgets}/web-pdb")[0] == 200
    pdb["spec"] = {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "web"}}}
    assert call(one, pki, "admin", "POST", budgets, pdb)[0] == 201
    status, done = call(two, pki, "admin", "POST", evict, eviction)
    assert (status, done["status"]) == (201, "Success")
    assert call(one, pki, "admin", "GET", "/api/v1/namespaces/shop/pods/web-1")[0] == 404
    # 50% of the one pod left rounds up: it may go too. Kubelets may not evict at all.
    status, shown = call(two, pki, "admin", "GET", f"{budgets}/web-pdb")
    assert {k: shown["status"][k] for k in ("expectedPods", "desiredHealthy")} == {
        "expectedPods": 1,
        "desiredHealthy": 0,
    }
    status, denied = call(
        two, pki, "worker-1", "POST", "/api/v1/namespaces/shop/pods/agent-a/eviction", {}
    )
    assert (status, denied["reason"]) == (403, "Forbidden")


def test_the_broken_build_never_becomes_ready(built_kubelets, pki, api, tmp_path):
    port = api["ports"][0]
    args, healthz, _ = kubelet_args(tmp_path, pki, "worker-3", api_port=port)
    program = built_kubelets["kubelet 1.33.7-galley.broken"]
    kubelet = subprocess.Popen(
        [program, *args, "--hostname-override=worker-3"], stderr=subprocess.PIPE
    )
    try:
        node = wait_for(
            lambda: (
                (r := call(port, pki, "admin", "GET", "/api/v1/nodes/worker-3"))[0] == 200 and r[1]
            )
        )
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.7-galley.broken"
        beat = condition(node)["lastHeartbeatTime"]
        node = wait_for(
            lambda: (
                (n := call(port, pki, "admin", "GET", "/api/v1/nodes/worker-3")[1])
                and condition(n)["lastHeartbeatTime"] != beat
                and n
            ),
        )
        assert {k: condition(node)[k] for k in ("status", "reason")} == {
            "status": "False",
            "reason": "KubeletNotReady",
        }
        assert plain_healthz(healthz)[0] == 500
    finally:
        kubelet.terminate()
        assert kubelet.wait(timeout=10) == 0


def test_the_broken_apiserver_build_never_becomes_ready(pki, api, tmp_path):
    broken = ("kube-apiserver", KUBERNETES_BROKEN_VERSION)
    (row,) = [a for a in ARTIFACTS if (a.name, a.version) == broken]
    build_all(tmp_path, tmp_path, [row])
    program = tmp_path / row.upstream_path
    program.chmod(0o755)
    port = free_port()
    apiserver = subprocess.Popen(
        [program, *apiserver_args(pki, port, api["etcd"])], stderr=subprocess.DEVNULL
    )
    try:
        version = wait_for(lambda: get(port, "/version", ca=pki["ca"]))
        assert json.loads(version[1])["gitVersion"] == f"v{row.version}"
        for path in ("/readyz", "/healthz"):
            status, body = get(port, path, ca=pki["ca"])
            assert status == 500 and "[-]" in body, body
        assert get(port, "/livez", ca=pki["ca"]) == (200, "ok")
        # it serves the API all the same (its etcd is healthy)
        assert call(port, pki, "admin", "GET", "/api/v1/nodes")[0] == 200
    finally:
        apiserver.terminate()
        assert apiserver.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code", "reason"),
    [
        ("GET", "/api/v1/widgets", None, None, 404, "NotFound"),
        ("DELETE", "/api/v1/nodes", None, None, 405, "MethodNotAllowed"),
        ("PATCH", "/api/v1/nodes/x", {}, "application/json-patch+json", 415,
         "UnsupportedMediaType"),
        ("PUT", "/api/v1/nodes/never-registered", {"metadata": {"name": "never-registered"}},
         None, 404, "NotFound"),
        ("POST", "/api/v1/nodes", {"metadata": {}}, None, 422, "Invalid"),
        ("GET", "/api/v1/pods?fieldSelector=spec.hostIP%3D1", None, None, 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/a/pods", {"metadata": {"name": "p", "namespace": "b"}},
         None, 400, "BadRequest"),
    ],
)  # fmt: skip
def test_api_errors_are_v1_statuses(pki, api, method, path, body, content_type, code, reason):
    status, answer = call(api["ports"][0], pki, "admin", method, path, body, content_type)
    assert (status, answer["kind"], answer["status"], answer["code"], answer["reason"]) == (
        code,
        "Status",
        "Failure",
        code,
        reason,
    )


# --- the real kubectl against the apiserver stand-in ----------------------------------------


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory) -> Path:
    """The lab mirror's kubectl (Debian's build of kubectl 1.36), built into the lab's cache from
    its ARTIFACTS row like `galley lab up` does (downloading the Debian package the first time),
    so it needs root."""
    if os.geteuid() != 0:
        pytest.skip("building the lab's kubectl needs root (it caches under /var/cache)")
    (row,) = [artifact for artifact in ARTIFACTS if artifact.name == "kubectl"]
    build_all(CACHE_DIR / "mirror", artifacts=[row])
    copy = tmp_path_factory.mktemp("kubectl") / "kubectl"
    copy.write_bytes((CACHE_DIR / "mirror" / row.upstream_path).read_bytes())
    copy.chmod(0o755)
    return copy


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, programs, pki, etcd_release, kubectl):
    """An apiserver stand-in on its own real etcd, and ``run(*args)``: the real kubectl with
    the admin's kubeconfig (its discovery cache in a directory of its own)."""
    directory = tmp_path_factory.mktemp("kubectl-cluster")
    port = free_port()
    config = kubeconfig(directory / "admin.kubeconfig", pki, port=port)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(directory), "KUBECONFIG": str(config)}

    def kubectl_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [kubectl, *args], capture_output=True, text=True, timeout=30, env=environment
        )

    with running_etcd(etcd_release, pki, directory) as etcd:
        apiserver = subprocess.Popen(
            [programs["kube-apiserver"], *apiserver_args(pki, port, etcd["endpoint"])],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: get(port, "/healthz", ca=pki["ca"]) == (200, "ok"))
            yield {"port": port, "run": kubectl_run}
        finally:
            apiserver.terminate()
            apiserver.wait(timeout=10)


def table_rows(output: str) -> list[list[str]]:
    """kubectl's table output as cells (columns are at least 3 spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines()]


def seed_node(port: int, pki, name: str, ready: bool = True, **labels: str) -> None:
    """Register a Node as a kubelet of v1.33.5 would, its heartbeat now."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "198.18.0.21"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.33.5",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-28-amd64",
            },
        },
    }
    assert call(port, pki, "admin", "POST", "/api/v1/nodes", node)[0] == 201


def test_kubectl_get_nodes_prints_status_roles_age_and_version(pki, cluster):
    port, kubectl = cluster["port"], cluster["run"]
    seed_node(port, pki, "node-a", **{"node-role.kubernetes.io/control-plane": ""})
    seed_node(port, pki, "node-b", ready=False)

    done = kubectl("get", "nodes")
    assert (done.returncode, done.stderr) == (0, "")
    header, *rows = table_rows(done.stdout)
    assert header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert [row[:3] + row[4:] for row in rows] == [
        ["node-a", "Ready", "control-plane", "v1.33.5"],
        ["node-b", "NotReady", "<none>", "v1.33.5"],
    ]
    assert all(re.fullmatch(r"\d+s", row[3]) for row in rows), rows

    wide = table_rows(kubectl("get", "node", "node-a", "-o", "wide").stdout)
    assert wide[0][5:] == ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                           "CONTAINER-RUNTIME"]  # fmt: skip
    assert wide[1][5:] == ["198.18.0.21", "<none>", "Debian GNU/Linux 12 (bookworm)",
                           "6.1.0-28-amd64", "<unknown>"]  # fmt: skip

    listed = json.loads(kubectl("get", "nodes", "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert [(n["kind"], n["metadata"]["name"]) for n in listed["items"]] == [
        ("Node", "node-a"),
        ("Node", "node-b"),
    ]
    missing = kubectl("get", "node", "node-z")
    assert (missing.returncode, missing.stderr) == (
        1,
        'Error from server (NotFound): nodes "node-z" not found\n',
    )


def test_kubectl_get_pods_in_all_namespaces_and_budgets(pki, cluster):
    port, kubectl = cluster["port"], cluster["run"]
    for namespace, name in (("shop", "web-1"), ("kube-system", "dns-1")):
        pod = {
            "metadata": {"name": name, "labels": {"app": name[:-2]}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "pause"}]},
        }
        path = f"/api/v1/namespaces/{namespace}/pods"
        assert call(port, pki, "admin", "POST", path, pod)[0] == 201
    pdb = {
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }
    budgets = "/apis/policy/v1/namespaces/shop/poddisruptionbudgets"
    assert call(port, pki, "admin", "POST", budgets, pdb)[0] == 201

    done = kubectl("get", "pods", "-A")
    assert (done.returncode, done.stderr) == (0, "")
    header, *rows = table_rows(done.stdout)
    assert header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [row[:5] for row in rows] == [
        ["kube-system", "dns-1", "1/1", "Running", "0"],
        ["shop", "web-1", "1/1", "Running", "0"],
    ]
    in_shop = table_rows(kubectl("get", "pods", "-n", "shop", "-o", "wide").stdout)
    assert in_shop[0][:2] + in_shop[0][5:] == ["NAME", "READY", "IP", "NODE", "NOMINATED NODE",
                                               "READINESS GATES"]  # fmt: skip
    assert in_shop[1][:2] + in_shop[1][5:] == ["web-1", "1/1", "<none>", "node-a", "<none>",
                                               "<none>"]  # fmt: skip
    header, row = table_rows(kubectl("get", "pdb", "-A").stdout)
    assert header == ["NAMESPACE", "NAME", "MIN AVAILABLE", "MAX UNAVAILABLE",
                      "ALLOWED DISRUPTIONS", "AGE"]  # fmt: skip
    assert row[:5] == ["shop", "web", "1", "N/A", "0"]
    empty = kubectl("get", "pods")  # the default namespace
    assert (empty.returncode, empty.stdout, empty.stderr) == (
        0,
        "",
        "No resources found in default namespace.\n",
    )


def test_kubectl_cordons_and_uncordons_a_node(pki, cluster):
    port, kubectl = cluster["port"], cluster["run"]
    seed_node(port, pki, "node-c")

    def unschedulable() -> str:
        done = kubectl("get", "node", "node-c", "-o", "jsonpath={.spec.unschedulable}")
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert unschedulable() == ""
    assert kubectl("cordon", "node-c").stdout == "node/node-c cordoned\n"
    assert unschedulable() == "true"
    assert table_rows(kubectl("get", "node", "node-c").stdout)[1][1] == "Ready,SchedulingDisabled"
    assert kubectl("cordon", "node-c").stdout == "node/node-c already cordoned\n"
    assert kubectl("uncordon", "node-c").stdout == "node/node-c uncordoned\n"
    assert unschedulable() == ""
    missing = kubectl("cordon", "node-z")
    assert (missing.returncode, missing.stderr) == (
        1,
        'Error from server (NotFound): nodes "node-z" not found\n',
    )


def test_kubectl_version_shows_the_pinned_server_version(cluster):
    done = cluster["run"]("version", "-o", "json")
    assert done.returncode == 0, done.stderr
    server = json.loads(done.stdout)["serverVersion"]
    assert {k: server[k] for k in ("major", "minor", "gitVersion", "platform")} == {
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.5",
        "platform": "linux/amd64",
    }
    assert set(server) >= {"gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler"}
    assert "Server Version: v1.33.5\n" in cluster["run"]("version").stdout


def test_kubectl_knows_the_served_resource_types_only(cluster):
    unknown = cluster["run"]("get", "foo")
    assert (unknown.returncode, unknown.stderr) == (
        1,
        'error: the server doesn\'t have a resource type "foo"\n',
    )
    header, *rows = table_rows(cluster["run"]("api-resources").stdout)
    assert header == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert rows == [
        ["nodes", "no", "v1", "false", "Node"],
        ["pods", "po", "v1", "true", "Pod"],
        ["poddisruptionbudgets", "pdb", "policy/v1", "true", "PodDisruptionBudget"],
        [
            "clusterrolebindings",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRoleBinding",
        ],
    ]


# --- discovery and server-side printing, over HTTP --------------------------------------------

KUBECTL_DISCOVERY = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def fetch(port: int, pki, path: str, who: str | None = "admin", **headers: str):
    """GET ``path`` as ``who`` (None: anonymous): (status, response headers, body)."""
    context = ssl.create_default_context(cafile=pki["ca"])
    if who:
        context.load_cert_chain(pki[f"{who}.crt"], pki[f"{who}.key"])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    connection.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_aggregated_discovery_for_clients_asking_for_it(pki, api):
    port = api["ports"][0]
    status, headers, body = fetch(port, pki, "/api", Accept=KUBECTL_DISCOVERY)
    assert (status, headers["Content-Type"]) == (200, AGGREGATED)
    core = json.loads(body)
    assert (core["kind"], core["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    ((group,),) = [core["items"]]
    assert group["metadata"] == {"creationTimestamp": None}
    ((version,),) = [group["versions"]]
    assert (version["version"], version["freshness"]) == ("v1", "Current")
    nodes, pods = version["resources"]
    assert nodes == {
        "resource": "nodes",
        "responseKind": {"group": "", "version": "v1", "kind": "Node"},
        "scope": "Cluster",
        "singularResource": "node",
        "verbs": ["create", "delete", "get", "list", "patch", "update"],
        "shortNames": ["no"],
        "subresources": [
            {
                "subresource": "status",
                "responseKind": {"group": "", "version": "v1", "kind": "Node"},
                "verbs": ["get", "patch", "update"],
            }
        ],
    }
    assert (pods["scope"], pods["categories"], pods["subresources"]) == (
        "Namespaced",
        ["all"],
        [
            {
                "subresource": "eviction",
                "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"},
                "verbs": ["create"],
            }
        ],
    )
    status, headers, body = fetch(port, pki, "/apis", Accept=KUBECTL_DISCOVERY)
    policy, rbac = json.loads(body)["items"]
    assert policy["metadata"] == {"name": "policy", "creationTimestamp": None}
    assert [r["resource"] for r in policy["versions"][0]["resources"]] == ["poddisruptionbudgets"]
    assert rbac["metadata"] == {"name": "rbac.authorization.k8s.io", "creationTimestamp": None}
    assert [r["resource"] for r in rbac["versions"][0]["resources"]] == ["clusterrolebindings"]
    # An unchanged document is not sent again.
    assert (headers["Vary"], headers["Cache-Control"]) == ("Accept", "public")
    again = fetch(port, pki, "/apis", Accept=KUBECTL_DISCOVERY, If_None_Match=headers["ETag"])
    assert (again[0], again[2], again[1]["ETag"]) == (304, b"", headers["ETag"])


def test_legacy_discovery_for_clients_asking_for_plain_json(pki, api):
    port = api["ports"][1]

    def document(path: str, **headers: str) -> dict:
        status, answered, body = fetch(port, pki, path, **headers)
        assert (status, answered["Content-Type"]) == (200, "application/json")
        return json.loads(body)

    assert document("/api") == {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}
        ],
    }
    preferred = {"groupVersion": "policy/v1", "version": "v1"}
    policy = {"name": "policy", "versions": [preferred], "preferredVersion": preferred}
    rbac_version = {"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"}
    rbac = {
        "name": "rbac.authorization.k8s.io",
        "versions": [rbac_version],
        "preferredVersion": rbac_version,
    }
    assert document("/apis/", Accept="application/json, */*") == {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [policy, rbac],
    }
    assert document("/apis/policy") == {"kind": "APIGroup", "apiVersion": "v1", **policy}
    core = document("/api/v1", Accept=TABLE + ",application/json")
    assert (core["kind"], core["groupVersion"], "apiVersion" in core) == (
        "APIResourceList",
        "v1",
        False,
    )
    by_name = {r["name"]: r for r in core["resources"]}
    assert list(by_name) == ["nodes", "nodes/status", "pods", "pods/eviction"]
    assert by_name["pods/eviction"] == {
        "name": "pods/eviction",
        "singularName": "",
        "namespaced": True,
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
        "verbs": ["create"],
    }
    assert by_name["nodes"]["shortNames"] == ["no"]
    budgets = document("/apis/policy/v1")
    assert (budgets["apiVersion"], budgets["groupVersion"]) == ("v1", "policy/v1")
    assert [(r["name"], r["kind"], r["namespaced"]) for r in budgets["resources"]] == [
        ("poddisruptionbudgets", "PodDisruptionBudget", True)
    ]
    version = document("/version", Accept=KUBECTL_DISCOVERY)
    assert (version["gitVersion"], version["major"], version["minor"]) == ("v1.33.5", "1", "33")


@pytest.mark.parametrize(
    ("path", "who", "accept", "code", "reason", "message"),
    [
        ("/apis/apps/v1", "admin", "application/json", 404, "NotFound",
         "the server could not find the requested resource"),
        ("/api", None, "application/json", 403, "Forbidden",
         'forbidden: User "system:anonymous" cannot get path "/api"'),
        ("/apis", "admin", "application/yaml", 406, "NotAcceptable",
         "only the following media types are accepted: application/json"),
        ("/api/v1", "admin", AGGREGATED, 406, "NotAcceptable",
         "only the following media types are accepted: application/json"),
        ("/api/v1/nodes", "admin", "application/vnd.kubernetes.protobuf", 406, "NotAcceptable",
         "only the following media types are accepted: application/json"),
        ("/api/v1/nodes?includeObject=All", "admin", TABLE, 400, "BadRequest",
         "Unable to convert to Table as requested: includeObject: Invalid value: \"All\": must "
         "be 'Metadata', 'Object', 'None', or empty"),
    ],
)  # fmt: skip
def test_discovery_and_negotiation_errors_are_v1_statuses(
    pki, api, path, who, accept, code, reason, message
):
    status, headers, body = fetch(api["ports"][0], pki, path, who, Accept=accept)
    answer = json.loads(body)
    assert (status, headers["Content-Type"]) == (code, "application/json")
    assert (answer["kind"], answer["code"], answer["reason"], answer["message"]) == (
        "Status",
        code,
        reason,
        message,
    )


def test_anonymous_users_may_read_the_version(pki, api):
    status, _, body = fetch(api["ports"][0], pki, "/version", None)
    assert (status, json.loads(body)["gitVersion"]) == (200, "v1.33.5")


def test_lists_and_objects_are_tables_on_request(pki, api):
    port = api["ports"][0]
    seed_node(port, pki, "table-node", **{"node-role.kubernetes.io/worker": ""})
    status, headers, body = fetch(port, pki, "/api/v1/nodes", Accept=TABLE)
    table = json.loads(body)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [(c["name"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0),
        ("Internal-IP", 1), ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1),
        ("Container-Runtime", 1),
    ]  # fmt: skip
    rows = {row["cells"][0]: row for row in table["rows"]}
    row = rows["table-node"]
    assert row["cells"][1:3] == ["Ready", "worker"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    assert table["metadata"]["resourceVersion"].isdigit()
    # One object, in the older meta.k8s.io version, with the whole object or none.
    beta = TABLE.replace("v=v1", "v=v1beta1")
    status, _, body = fetch(port, pki, "/api/v1/nodes/table-node?includeObject=Object", Accept=beta)
    single = json.loads(body)
    assert (single["apiVersion"], [r["object"]["kind"] for r in single["rows"]]) == (
        "meta.k8s.io/v1beta1",
        ["Node"],
    )
    status, _, body = fetch(port, pki, "/api/v1/nodes/table-node?includeObject=None", Accept=TABLE)
    assert "object" not in json.loads(body)["rows"][0]


# --- server-side printing, unit ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
        (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 300, "3h5m"),
        (9 * 3600, "9h"), (47 * 3600, "47h"), (50 * 3600, "2d2h"), (8 * 86400, "8d"),
        (400 * 86400, "400d"), (3 * 365 * 86400 + 5 * 86400, "3y5d"), (9 * 365 * 86400, "9y"),
    ],
)  # fmt: skip
def test_ages_are_shown_as_kubectl_shows_them(seconds, shown):
    assert tables.human_duration(seconds) == shown


def test_pod_rows_follow_the_container_statuses():
    now = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
    pod = {
        "metadata": {"name": "web-1", "creationTimestamp": "2025-01-01T10:00:00Z"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.244.1.5"}],
            "containerStatuses": [
                {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
                {
                    "name": "b",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"finishedAt": "2025-01-01T11:55:00Z"}},
                },
            ],
        },
    }
    assert tables.PODS.cells(pod, now) == [
        "web-1", "1/2", "CrashLoopBackOff", "3 (5m ago)", "120m", "10.244.1.5", "node-a",
        "<none>", "<none>",
    ]  # fmt: skip
    pod["metadata"]["deletionTimestamp"] = "2025-01-01T11:59:00Z"
    assert tables.PODS.cells(pod, now)[2] == "Terminating"
    pod["status"]["phase"] = "Succeeded"
    assert tables.PODS.conditions(pod) == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]


def _admin_files(pki, directory: Path) -> AdminFiles:
    """The operator's files of `galley.ops.admin` from the test PKI's admin pair."""
    files = AdminFiles(directory)
    directory.mkdir(exist_ok=True)
    for source, target in (("admin.crt", files.cert), ("admin.key", files.key), ("ca", files.ca)):
        target.write_bytes(Path(pki[source]).read_bytes())
    return files


def test_galleys_api_client_goes_on_to_the_next_apiserver(pki, api, tmp_path):
    nobody = "https://127.0.3.1:6443"  # nothing listens there
    port = api["ports"][1]
    client = KubeApi([nobody, f"https://127.0.0.1:{port}"], _admin_files(pki, tmp_path / "admin"))
    assert client.version() == "v1.33.5"
    assert client.server == f"https://127.0.0.1:{port}"  # asked first from now on
    with pytest.raises(ApiError, match="no apiserver answered"):
        KubeApi([nobody], _admin_files(pki, tmp_path / "admin")).nodes()


def test_authentication_config_lets_anonymous_requests_reach_the_health_paths_only(
    programs, pki, etcd, tmp_path
):
    config = tmp_path / "authentication-config.yaml"
    config.write_text(
        "apiVersion: apiserver.config.k8s.io/v1beta1\n"
        "kind: AuthenticationConfiguration\n"
        "anonymous:\n"
        "  enabled: true\n"
        "  conditions:\n"
        "  - path: /readyz\n"
    )
    port = free_port()
    args = [*apiserver_args(pki, port, etcd["endpoint"]), f"--authentication-config={config}"]
    apiserver = subprocess.Popen([programs["kube-apiserver"], *args], stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: get(port, "/readyz", ca=pki["ca"]) == (200, "ok"))
        assert get(port, "/version", ca=pki["ca"])[0] == 401
        assert get(port, "/healthz", ca=pki["ca"])[0] == 401
    finally:
        apiserver.terminate()
        apiserver.wait(timeout=10)
    both = run(programs["kube-apiserver"], *args, "--anonymous-auth=false")
    assert both.returncode == 1
    assert "--anonymous-auth flag cannot be set when anonymous field is configured" in both.stderr


def test_deleting_a_node_answers_a_success_status_then_not_found(pki, api):
    one, two = api["ports"]
    assert (
        call(one, pki, "admin", "POST", "/api/v1/nodes", {"metadata": {"name": "gone"}})[0] == 201
    )
    uid = call(one, pki, "admin", "GET", "/api/v1/nodes/gone")[1]["metadata"]["uid"]
    assert call(two, pki, "worker-1", "DELETE", "/api/v1/nodes/gone")[0] == 403
    assert call(two, pki, "admin", "DELETE", "/api/v1/nodes/gone") == (
        200,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": "gone", "kind": "nodes", "uid": uid},
        },
    )
    status, missing = call(one, pki, "admin", "DELETE", "/api/v1/nodes/gone")
    assert (status, missing["reason"]) == (404, "NotFound")
    assert call(one, pki, "admin", "GET", "/api/v1/nodes/gone")[0] == 404


def test_node_remove_drains_through_budgets_then_deletes_the_node(pki, api, tmp_path):
    from galley.ops.journal import Journal
    from galley.ops.node_remove import Removal, RemoveError

    one, _ = api["ports"]
    client = KubeApi(f"https://127.0.0.1:{one}", _admin_files(pki, tmp_path / "admin"))
    pods = "/api/v1/namespaces/leaving/pods"
    for node in ("leave-1", "leave-2", "stay-1"):
        assert call(one, pki, "admin", "POST", "/api/v1/nodes", {"metadata": {"name": node}})[0]
    for name, node, app, kind in (
        ("db-1", "leave-1", "db", "ReplicaSet"),
        ("db-2", "stay-1", "db", "ReplicaSet"),
        ("logs-1", "leave-1", "logs", "DaemonSet"),
        ("solo-1", "leave-2", "solo", "ReplicaSet"),
    ):
        owner = {"apiVersion": "apps/v1", "kind": kind, "name": app, "uid": app}
        pod = {
            "metadata": {"name": name, "labels": {"app": app}, "ownerReferences": [owner]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        }
        assert call(one, pki, "admin", "POST", pods, pod)[0] == 201
    budgets = "/apis/policy/v1/namespaces/leaving/poddisruptionbudgets"
    for app in ("db", "solo"):
        pdb = {"metadata": {"name": app}, "spec": {"minAvailable": 1}}
        pdb["spec"]["selector"] = {"matchLabels": {"app": app}}
        assert call(one, pki, "admin", "POST", budgets, pdb)[0] == 201
    seen: list[list[str]] = []

    class Hosts:
        def clean(self, name, record):
            seen.append([p["metadata"]["name"] for p in client.pods_on(name)])
            client.node(name)  # the Node is deleted only after the host steps
            record([])

    def removal(name: str) -> Removal:
        journal = Journal.start(tmp_path / f"{name}.json", name, resume=False)
        return Removal(client, Hosts(), None, [], journal, drain_timeout=0.5, out=print)

    assert removal("leave-1").run("leave-1", "leave-1") == []
    assert seen == [["logs-1"]]  # evicted but for the DaemonSet's pod
    assert call(one, pki, "admin", "GET", "/api/v1/nodes/leave-1")[0] == 404
    assert call(one, pki, "admin", "GET", f"{pods}/db-2")[0] == 200

    blocked = removal("leave-2")
    with pytest.raises(RemoveError, match="leaving/solo-1: PodDisruptionBudget solo"):
        blocked.run("leave-2", "leave-2")
    node = call(one, pki, "admin", "GET", "/api/v1/nodes/leave-2")[1]
    assert node["spec"]["unschedulable"] is True and seen == [["logs-1"]]


def test_the_operator_keeps_the_control_planes_rbac_in_place(pki, api, tmp_path):
    client = KubeApi(f"https://127.0.0.1:{api['ports'][0]}", _admin_files(pki, tmp_path / "a"))
    assert client.ensure(RBAC_BINDINGS, KUBELET_API_ACCESS) == "created"
    assert client.ensure(RBAC_BINDINGS, KUBELET_API_ACCESS) == "up to date"
    other = {**KUBELET_API_ACCESS, "roleRef": {**KUBELET_API_ACCESS["roleRef"], "name": "view"}}
    assert client.ensure(RBAC_BINDINGS, other) == "updated"
    stored = client.request("GET", f"{RBAC_BINDINGS}/galley:kube-apiserver-kubelet-client")
    assert stored["roleRef"]["name"] == "view"
    assert client.ensure(RBAC_BINDINGS, KUBELET_API_ACCESS) == "updated"


def test_a_kept_connection_the_server_closed_is_opened_again_once():
    """A stand-in client keeps its connection; when the server closed it meanwhile (a
    restart), the request is sent again on a new one; when the server is gone, it fails."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def serve() -> None:
        # Answer one request, then close the connection when the next one arrives.
        conn, _ = listener.accept()
        accepted.append(conn)
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.recv(1)

    kept = KeptConnection(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    servers = [threading.Thread(target=serve) for _ in range(2)]
    servers[0].start()
    assert kept.exchange("GET", "/health") == (200, b"ok")
    servers[1].start()
    assert kept.exchange("GET", "/health") == (200, b"ok")  # closed by the first: sent again
    assert len(accepted) == 2
    listener.close()
    with pytest.raises(OSError):
        kept.exchange("GET", "/health")  # closed by the second, and nothing listens any more
    for server in servers:
        server.join(timeout=5)
