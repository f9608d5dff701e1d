"""Real Kubernetes on the lab, through the real kubectl: Nodes Ready at the lab's version, pods
on two workers reaching each other over flannel's VXLAN and through a Service, what each
galley identity may do (and what it may not), and what anonymous requests reach."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from galley.lab.artifacts import KUBERNETES_VERSION
from galley.lab.images import BUSYBOX_VERSION

from .conftest import admin_files, hosts_of, ssh

BUSYBOX = f"docker.io/library/busybox:{BUSYBOX_VERSION}"
NAMESPACE = "galley-test"


def run_kubectl(kubectl: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(admin_files().kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_every_worker_is_a_ready_node_at_the_labs_version(cluster, kubectl):
    nodes = json.loads(run_kubectl(kubectl, "get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == hosts_of(cluster, "workers")
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", node["metadata"]["name"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{KUBERNETES_VERSION}"
        assert node["spec"]["podCIDR"]  # allocated by the controller manager, leased by flannel
    services = json.loads(run_kubectl(kubectl, "get", "svc", "-A", "-o", "json").stdout)["items"]
    assert ("default", "kubernetes") in {
        (svc["metadata"]["namespace"], svc["metadata"]["name"]) for svc in services
    }


def _pod(name: str, node: str, command: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": name, "image": BUSYBOX, "command": ["/bin/sh", "-c", command]}],
        },
    }


@pytest.fixture
def pods(kubectl):
    """A namespace of the test's own, deleted afterwards: its pods and Service gone before
    the next test (1 s grace), the namespace itself finalized in the background (nothing
    else uses its name)."""
    run_kubectl(kubectl, "create", "namespace", NAMESPACE)
    yield
    run_kubectl(kubectl, "delete", "-n", NAMESPACE, "pods,services", "--all", "--timeout=60s")
    run_kubectl(kubectl, "delete", "namespace", NAMESPACE, "--wait=false")


def _get(kubectl: Path, target: str) -> subprocess.CompletedProcess:
    """An HTTP GET from the client pod (busybox's nc: its wget needs glibc's NSS)."""
    host, port = target.rsplit(":", 1)
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}"
    return run_kubectl(kubectl, "exec", "-n", NAMESPACE, "client", "--", "sh", "-c", request)


def test_pods_on_two_workers_reach_each_other_over_vxlan_and_a_service(
    cluster,
    kubectl,
    pods,
):
    first, second = hosts_of(cluster, "workers")[:2]
    serve = "mkdir /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"
    manifests = [
        _pod("web", first, serve, {"app": "web"}),
        _pod("client", second, "exec sleep 3600"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]
    applied = subprocess.run(
        [str(kubectl), "--kubeconfig", str(admin_files().kubeconfig), "apply", "-f", "-"],
        input="\n---\n".join(json.dumps(m) for m in manifests),
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    ready = ("--for=condition=Ready", "pod/web", "pod/client", "--timeout=120s")
    run_kubectl(kubectl, "wait", "-n", NAMESPACE, *ready)
    web, client, service = (
        json.loads(run_kubectl(kubectl, "get", "-n", NAMESPACE, kind, name, "-o", "json").stdout)
        for kind, name in (("pod", "web"), ("pod", "client"), ("svc", "web"))
    )
    # Each pod has an address of its own node's flannel lease.
    assert web["spec"]["nodeName"] == first and client["spec"]["nodeName"] == second
    assert web["status"]["podIP"] != client["status"]["podIP"]
    direct = _get(kubectl, f"{web['status']['podIP']}:8080")
    assert direct.stdout.startswith("HTTP/1.1 200 OK") and "hello-from-web" in direct.stdout
    deadline = time.monotonic() + 30  # kube-proxy programs the Service within a moment
    through = _get(kubectl, f"{service['spec']['clusterIP']}:80")
    while "hello-from-web" not in through.stdout and time.monotonic() < deadline:
        time.sleep(1)
        through = _get(kubectl, f"{service['spec']['clusterIP']}:80")
    assert "hello-from-web" in through.stdout


# Each identity galley deploys, as kubectl impersonates it: what it must be allowed, and what
# it must be refused (verb, resource, subresource).
IDENTITIES = {
    "kubelet of lab-worker-1": (
        ["--as=system:node:lab-worker-1", "--as-group=system:nodes"],
        [("get", "nodes/lab-worker-1", ""), ("create", "tokenreviews", "")],
        [("list", "secrets", ""), ("get", "nodes/lab-worker-2", ""), ("delete", "nodes", "")],
    ),
    "flannel on lab-worker-1": (
        ["--as=flannel:lab-worker-1", "--as-group=galley:flannel"],
        [("list", "nodes", ""), ("watch", "nodes", ""), ("patch", "nodes", "status")],
        [("list", "pods", ""), ("get", "secrets", ""), ("patch", "nodes", "")],
    ),
    "kube-proxy": (
        ["--as=system:kube-proxy", "--as-group=system:node-proxier"],
        [("list", "services", ""), ("watch", "endpointslices.discovery.k8s.io", "")],
        [("create", "pods", ""), ("get", "secrets", "")],
    ),
    "kube-scheduler": (
        ["--as=system:kube-scheduler"],
        [("create", "pods", "binding"), ("list", "nodes", "")],
        [("get", "secrets", ""), ("create", "secrets", "")],
    ),
    "the apiservers' kubelet client": (
        ["--as=kube-apiserver-kubelet-client"],
        [("get", "nodes", "proxy"), ("get", "nodes", "stats")],
        [("list", "secrets", ""), ("create", "pods", "")],
    ),
}


@pytest.mark.parametrize("identity", list(IDENTITIES))
def test_each_identity_may_do_its_job_and_nothing_else(cluster, kubectl, identity):
    who, allowed, refused = IDENTITIES[identity]
    for checks, expected in ((allowed, "yes"), (refused, "no")):
        for verb, resource, subresource in checks:
            ask = ["auth", "can-i", verb, resource, "-A", *who]
            if subresource:
                ask.append(f"--subresource={subresource}")
            answer = run_kubectl(kubectl, *ask, check=False)
            said = answer.stdout.split()[0] if answer.stdout.split() else ""
            assert said == expected, (identity, verb, resource, answer.stdout, answer.stderr)


def _patch_node_as_kubelet(worker: str, node: str, labels: dict) -> tuple[int, str]:
    """PATCH a Node's labels with ``worker``'s own kubelet credential: status and message."""
    pki = "/etc/kubernetes/pki"
    body = json.dumps({"metadata": {"labels": labels}})
    answer = ssh(
        worker,
        f"curl -sS --cacert {pki}/ca.crt --cert {pki}/kubelet.crt --key {pki}/kubelet.key "
        "-X PATCH -H 'Content-Type: application/merge-patch+json' "
        f"-d '{body}' -w '\\n%{{http_code}}' https://127.0.0.1:6443/api/v1/nodes/{node}",
    )
    text, _, code = answer.rpartition("\n")
    return int(code), json.loads(text).get("message", "")


def test_node_restriction_lets_a_kubelet_modify_its_own_node_only(cluster):
    first, second = hosts_of(cluster, "workers")[:2]
    code, message = _patch_node_as_kubelet(first, second, {"galley-test": "other"})
    assert code == 403
    assert (
        message
        == f'nodes "{second}" is forbidden: node "{first}" is not allowed to modify node "{second}"'
    )
    assert _patch_node_as_kubelet(first, first, {"galley-test": "own"})[0] == 200
    assert _patch_node_as_kubelet(first, first, {"galley-test": None})[0] == 200


def test_anonymous_requests_reach_readyz_only(cluster):
    ca = str(admin_files().ca)
    for droplet in cluster.droplets:
        if "control_plane" in droplet.roles:
            base = f"https://{droplet.address}:6443"
            assert requests.get(f"{base}/readyz", verify=ca, timeout=5).text == "ok"
            refused = requests.get(f"{base}/api", verify=ca, timeout=5)
            assert refused.status_code == 401, refused.text
