"""Kubernetes deploy pieces that need no lab: raw-binary installs, rendered configs, the identity
table, validation rules, shared secrets and the admin credential (against a real OpenBao)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import jinja2
import pytest
import yaml
from pyinfra.api import Inventory

from galley import components as registry
from galley.components import certificates_of
from galley.components.api_proxy import backends
from galley.components.flanneld import flanneld_args, net_conf
from galley.components.kubelet import KUBELET
from galley.components.kubernetes import api_url, cluster_dns_ip, needs_proxy, operator_api_urls
from galley.components.model import TEMPLATES
from galley.host.release import _fetch_script
from galley.inventory.validate import problems
from galley.ops import vault_bootstrap
from galley.ops.admin import (
    BREAK_GLASS,
    AdminFiles,
    render_kubeconfig,
    update_reason,
    write_admin_files,
)
from galley.vault import kv, pki

SHA = "a" * 64
DATA = {
    "cluster_name": "lab",
    "arch": "amd64",
    "vault_addr": "http://127.0.0.1:8200",
    "pod_cidr": "172.16.0.0/16",
    "service_cidr": "172.20.0.0/16",
    "node_cidrs": ["198.18.0.0/24"],
    "node_cidr_mask_size": 24,
    "cluster_domain": "cluster.local",
    "api_port": 6443,
    "api_endpoint": None,
    "kubernetes_version": "1.33.5",
    "flannel_mode": "kube",
    "flannel_backend": {"Type": "vxlan"},
    "flannel_version": "0.26.7",
    "etcd_client_port": 2379,
    **{
        f"{name}_checksums": {"1.33.5": {"amd64": SHA}}
        for name in ("kubelet", "kube_proxy", "kube_apiserver")
    },
}
ENV = {"VAULT_TOKEN": "t"}


def _inventory(**data) -> Inventory:
    return Inventory(
        (
            [
                ("lab-etcd-1", {"private_ip": "198.18.0.10"}),
                ("lab-cp-1", {"private_ip": "198.18.0.13"}),
                ("lab-worker-1", {"private_ip": "198.18.0.15"}),
            ],
            DATA | data,
        ),
        etcd=(["lab-etcd-1"], {}),
        control_plane=(["lab-cp-1"], {}),
        workers=(["lab-worker-1"], {}),
    )


def test_raw_binary_is_verified_then_installed_as_the_named_executable(tmp_path: Path):
    download = tmp_path / "runc.amd64"
    download.write_text("#!/bin/sh\necho runc\n")
    digest = hashlib.sha256(download.read_bytes()).hexdigest()
    base = tmp_path / "opt" / "runc"
    script = _fetch_script(str(base), "1.3.6", download.as_uri(), digest, ["runc"], 1, False)
    subprocess.run(["sh", "-c", script], check=True, capture_output=True)
    assert subprocess.run([base / "1.3.6" / "runc"], capture_output=True).stdout == b"runc\n"
    assert (base / "1.3.6" / ".galley-complete").read_text().strip() == digest

    bad = _fetch_script(str(base), "1.3.7", download.as_uri(), SHA, ["runc"], 1, False)
    failed = subprocess.run(["sh", "-c", bad], capture_output=True, text=True)
    assert failed.returncode != 0 and "sha256 mismatch" in failed.stderr
    assert not (base / "1.3.7").exists()


def _render(name: str, **variables) -> str:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string((TEMPLATES / name).read_text()).render(**variables)


@pytest.mark.parametrize(
    ("template", "api_version", "kind"),
    [
        ("kubelet/kubelet-config.yaml.j2", "kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
        (
            "kube-proxy/kube-proxy-config.yaml.j2",
            "kubeproxy.config.k8s.io/v1alpha1",
            "KubeProxyConfiguration",
        ),
        (
            "kube-scheduler/kube-scheduler.yaml.j2",
            "kubescheduler.config.k8s.io/v1",
            "KubeSchedulerConfiguration",
        ),
        (
            "kube-apiserver/encryption-config.yaml.j2",
            "apiserver.config.k8s.io/v1",
            "EncryptionConfiguration",
        ),
        (
            "kube-apiserver/authentication-config.yaml.j2",
            "apiserver.config.k8s.io/v1beta1",
            "AuthenticationConfiguration",
        ),
        ("kubernetes/kubeconfig.j2", "v1", "Config"),
    ],
)
def test_config_files_have_their_current_kind(template, api_version, kind):
    parsed = yaml.safe_load(_render(template, **_variables()))
    assert (parsed["apiVersion"], parsed["kind"]) == (api_version, kind)


def _variables(**overrides) -> dict:
    """Every variable the Kubernetes templates take, for lab-worker-1 of the lab."""
    return {
        "cluster_name": "lab",
        "cluster_domain": "cluster.local",
        "cluster_dns": "172.20.0.10",
        "ca_path": "/etc/kubernetes/pki/ca.crt",
        "certs": KUBELET.certs_by_stem(_inventory().get_host("lab-worker-1")),
        "kubeconfig": "/etc/kubernetes/x.kubeconfig",
        "pod_cidr": "172.16.0.0/16",
        "node_name": "lab-worker-1",
        "private_ip": "198.18.0.15",
        "port": 10250,
        "healthz_port": 10256,
        "kv_mount": "lab/kv",
        "encryption_key": "a2V5",
        "server": "https://198.18.0.13:6443",
        "user_name": "system:node:lab-worker-1",
        "cert_path": "/etc/kubernetes/pki/kubelet.crt",
        "key_path": "/etc/kubernetes/pki/kubelet.key",
        "conntrack_max_per_core": 0,
        "node_lease_seconds": None,
    } | overrides


@pytest.mark.parametrize(("seconds", "written"), [(None, None), (12, 12)])
def test_the_kubelets_lease_is_its_own_default_unless_group_data_sets_one(seconds, written):
    text = _render("kubelet/kubelet-config.yaml.j2", **_variables(node_lease_seconds=seconds))
    assert yaml.safe_load(text).get("nodeLeaseDurationSeconds") == written


def test_cluster_dns_is_the_tenth_service_address():
    assert str(cluster_dns_ip("172.20.0.0/16")) == "172.20.0.10"


def test_identity_table_names_kubernetes_users_and_groups():
    inventory = _inventory()
    by_host = {
        host.name: {
            cert.cert_path.rsplit("/", 1)[1][:-4]: (cert, identity)
            for cert, identity in certificates_of(host)
        }
        for host in inventory
    }
    # Every host's own renewal credential is in its table too.
    assert set(by_host["lab-etcd-1"]) == {
        "member",
        "healthcheck-client",
        "maintenance-client",
        "host-identity",
    }
    assert by_host["lab-worker-1"]["host-identity"][1].cn == "lab-worker-1"
    apiserver = by_host["lab-cp-1"]["apiserver"][1]
    assert "kubernetes.default.svc.cluster.local" in apiserver.dns_names
    assert {"172.20.0.1", "198.18.0.13", "127.0.0.1"} <= set(apiserver.ip_addresses)
    worker = by_host["lab-worker-1"]
    assert worker["kubelet"][1].cn == "system:node:lab-worker-1"
    assert worker["kubelet"][1].organization == ("system:nodes",)
    assert worker["kube-proxy"][1].organization == ("system:node-proxier",)
    # flannel's own identity: the node's cannot list other nodes (the Node authorizer).
    assert worker["flannel"][1].cn == "flannel:lab-worker-1"
    assert worker["flannel"][1].organization == ("galley:flannel",)
    assert by_host["lab-cp-1"]["apiserver-etcd-client"][0].mount == "etcd"


def test_flannel_modes():
    inventory = _inventory()
    worker = inventory.get_host("lab-worker-1")
    assert "--kube-subnet-mgr" in flanneld_args(worker)
    assert net_conf(worker.data) == {
        "Network": "172.16.0.0/16",
        "SubnetLen": 24,
        "Backend": {"Type": "vxlan"},
    }
    etcd_mode = _inventory(flannel_mode="etcd").get_host("lab-worker-1")
    args = flanneld_args(etcd_mode)
    assert "--etcd-endpoints=https://198.18.0.10:2379" in args
    assert "--etcd-certfile=/etc/kube-flannel/pki/etcd-client.crt" in args


def _messages(inventory: Inventory, components) -> list[str]:
    return [str(problem) for problem in problems(inventory, components, ENV)]


def test_workers_need_a_control_plane_and_known_checksums():
    inventory = Inventory(
        ([("lab-worker-1", {"private_ip": "198.18.0.15"})], DATA),
        workers=(["lab-worker-1"], {}),
    )
    found = _messages(inventory, {"workers"})
    assert "inventory: control_plane: no hosts in group 'control_plane'" in found
    assert "lab-worker-1: containerd_version: missing" in found
    assert _messages(_inventory(), {"control_plane"}) == [
        "lab-cp-1: kube_controller_manager_checksums: no sha256 for kube_controller_manager "
        "1.33.5 on amd64",
        "lab-cp-1: kube_scheduler_checksums: no sha256 for kube_scheduler 1.33.5 on amd64",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"flannel_mode": "host"}, "flannel_mode: 'host' is not one of kube, etcd"),
        ({"flannel_backend": {"Type": "udp"}}, "flannel_backend: Type 'udp' is not one of"),
        ({"node_cidr_mask_size": 16}, "node_cidr_mask_size: /16 does not split pod_cidr"),
        ({"api_endpoint": "k8s.example.com"}, "api_endpoint: 'k8s.example.com' must be"),
    ],
)
def test_bad_kubernetes_settings_are_named(data, message):
    found = _messages(_inventory(**data), {"flannel"})
    assert any(message in problem for problem in found), found


@pytest.fixture
def vault(vault: hvac.Client) -> hvac.Client:
    """The session's OpenBao (tests/conftest.py) with the lab cluster bootstrapped."""
    vault_bootstrap.bootstrap(vault, "lab")
    return vault


def test_shared_secrets_are_generated_once(vault):
    secrets = registry.kv_secrets()
    assert [secret.name for secret in secrets] == [
        "galley/cluster-identity",
        "kubernetes/service-account",
        "kubernetes/encryption",
    ]
    first = {secret.name: kv.read(vault, "lab", secret) for secret in secrets}
    assert first["kubernetes/service-account"]["private_key"].startswith(
        "-----BEGIN PRIVATE KEY-----"
    )
    assert len(base64.b64decode(first["kubernetes/encryption"]["secretbox_key"])) == 32
    assert re.fullmatch(r"[0-9a-f]{32}", first["galley/cluster-identity"]["id"])
    mounted = vault.sys.list_mounted_secrets_engines()["data"]
    assert kv.bootstrap(vault, "lab", mounted, secrets) == []
    assert {s.name: kv.read(vault, "lab", s) for s in secrets} == first


def test_admin_credential_is_made_locally_signed_and_then_left_alone(vault, tmp_path):
    files = AdminFiles(tmp_path / "lab")
    ca = pki.read_ca(vault, "lab/pki/k8s")
    kubeconfig = render_kubeconfig(files, "lab", "https://198.18.0.13:6443")
    now = datetime.now(UTC)
    assert update_reason(files, ca, kubeconfig, "24h", now) == "no admin key"
    write_admin_files(files, lambda: vault, "lab/pki/k8s", "24h", ca, kubeconfig)
    assert files.key.stat().st_mode & 0o777 == 0o600
    assert update_reason(files, ca, kubeconfig, "24h", now) is None
    identity = pki.identity_of_cert(files.cert.read_text())
    assert (identity.cn, identity.organization) == ("admin", ("galley:cluster-admins",))
    cert = pki.load_certificate(files.cert.read_text())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=24, minutes=1)
    other = render_kubeconfig(files, "lab", "https://198.18.0.14:6443")
    assert update_reason(files, ca, other, "24h", now) == "kubeconfig changed"
    assert json.dumps(yaml.safe_load(kubeconfig)["users"][0]["name"]) == '"admin"'
    # Vault signs the admin for no longer than 24 h, whatever is asked.
    write_admin_files(files, lambda: vault, "lab/pki/k8s", "720h", ca, kubeconfig)
    cert = pki.load_certificate(files.cert.read_text())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=24, minutes=1)


def test_the_break_glass_credential_is_system_masters_for_an_hour_in_files_of_its_own(
    vault, tmp_path
):
    files = AdminFiles(tmp_path / "lab", BREAK_GLASS)
    ca = pki.read_ca(vault, "lab/pki/k8s")
    kubeconfig = render_kubeconfig(files, "lab", "https://198.18.0.13:6443")
    write_admin_files(files, lambda: vault, "lab/pki/k8s", BREAK_GLASS.ttl, ca, kubeconfig)
    assert sorted(p.name for p in files.directory.iterdir()) == [
        "break-glass.crt",
        "break-glass.key",
        "break-glass.kubeconfig",
        "ca.crt",
    ]
    identity = pki.identity_of_cert(files.cert.read_text())
    assert (identity.cn, identity.organization) == ("break-glass", ("system:masters",))
    cert = pki.load_certificate(files.cert.read_text())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=1, minutes=1)


def _two_apiservers(**data) -> Inventory:
    return Inventory(
        (
            [
                ("lab-cp-1", {"private_ip": "198.18.0.13"}),
                ("lab-cp-2", {"private_ip": "198.18.0.14"}),
                ("lab-worker-1", {"private_ip": "198.18.0.15"}),
            ],
            DATA | data,
        ),
        control_plane=(["lab-cp-1", "lab-cp-2"], {}),
        workers=(["lab-worker-1"], {}),
    )


def test_without_an_endpoint_workers_dial_their_proxy_to_every_apiserver():
    inventory = _two_apiservers()
    worker, cp = inventory.get_host("lab-worker-1"), inventory.get_host("lab-cp-1")
    assert api_url(worker) == "https://127.0.0.1:6443"
    # A control-plane host's clients dial its own apiserver, on the one address it listens on.
    assert api_url(cp) == api_url(cp, local=True) == "https://198.18.0.13:6443"
    assert needs_proxy(worker) and not needs_proxy(cp)
    assert backends(worker) == [("lab-cp-1", "198.18.0.13:6443"), ("lab-cp-2", "198.18.0.14:6443")]
    # The operator's client tries each apiserver.
    assert operator_api_urls(inventory) == ["https://198.18.0.13:6443", "https://198.18.0.14:6443"]


def test_an_endpoint_replaces_the_proxy_for_every_client_but_the_control_plane_itself():
    inventory = _two_apiservers(api_endpoint="api.lab.example.com")
    worker, cp = inventory.get_host("lab-worker-1"), inventory.get_host("lab-cp-1")
    assert api_url(worker) == "https://api.lab.example.com:6443"
    assert api_url(cp, local=True) == "https://198.18.0.13:6443"
    assert not needs_proxy(worker)
    assert operator_api_urls(inventory) == ["https://api.lab.example.com:6443"]
    assert api_url(_two_apiservers(api_endpoint="fd00::1").get_host("lab-worker-1")) == (
        "https://[fd00::1]:6443"
    )


def test_the_proxy_config_lists_every_apiserver_with_a_tls_readyz_check():
    text = _render(
        "api-proxy/haproxy.cfg.j2",
        cluster_name="lab",
        api_port=6443,
        ca_path="/etc/kubernetes/pki/ca.crt",
        backend="apiservers",
        servers=[("lab-cp-1", "198.18.0.13:6443"), ("lab-cp-2", "198.18.0.14:6443")],
        stats_socket="/run/api-proxy/stats.sock",
        metrics_listen="198.18.0.15:8405",
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "bind 127.0.0.1:6443" in lines
    # HAProxy's own exporter, on the private address only.
    assert "bind 198.18.0.15:8405" in lines
    assert "option httpchk GET /readyz" in lines
    assert "server lab-cp-1 198.18.0.13:6443" in lines
    assert "server lab-cp-2 198.18.0.14:6443" in lines
    check = next(line for line in lines if line.startswith("default-server"))
    assert "check-ssl verify required ca-file /etc/kubernetes/pki/ca.crt" in check
