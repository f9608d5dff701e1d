"""The validation layer: one test per rule, through pyinfra Inventory objects."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api import Inventory

from galley.components import CERT_RENEWAL
from galley.inventory.validate import (
    Problem,
    ValidationError,
    check,
    first_service_ip,
    problems,
)

ETCD_SHA = "a495115162845640be08c6cda069ff961260dbced53207c5a83b1b006ff2ea8e"
GOOD = {
    "cluster_name": "test",
    "arch": "amd64",
    "etcd_version": "3.5.30",
    "etcd_checksums": {"3.5.30": {"amd64": ETCD_SHA}},
    "pod_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/16",
    "node_cidrs": ["10.108.0.0/20"],
    "vault_addr": "http://127.0.0.1:8200",
    "node_cidr_mask_size": 24,
    "api_port": 6443,
    "kubernetes_version": "1.33.5",
    **{
        f"{binary}_checksums": {"1.33.5": {"amd64": ETCD_SHA}}
        for binary in ("kube_apiserver", "kube_controller_manager", "kube_scheduler")
    },
}
ENV = {"VAULT_TOKEN": "s.test"}
ALL = ("etcd", "control_plane")
HOSTS = {
    "test-etcd-1": {"private_ip": "10.108.0.11"},
    "test-etcd-2": {"private_ip": "10.108.0.12"},
    "test-etcd-3": {"private_ip": "10.108.0.13"},
    "test-worker-1": {"private_ip": "10.108.0.21"},
}
GROUPS = {
    "etcd": ["test-etcd-1", "test-etcd-2", "test-etcd-3"],
    "control_plane": ["test-etcd-1"],
    "workers": ["test-worker-1"],
}


def _inventory(hosts=None, groups=None, **data) -> Inventory:
    """The good inventory, with host data, groups or group/all data replaced (None drops a key)."""
    hosts = HOSTS if hosts is None else hosts
    groups = GROUPS if groups is None else groups
    all_data = {key: value for key, value in (GOOD | data).items() if value is not None}
    return Inventory(
        (list(hosts.items()), all_data),
        **{group: (names, {}) for group, names in groups.items()},
    )


def _messages(inventory: Inventory, components=ALL, environ=ENV) -> list[str]:
    return [str(problem) for problem in problems(inventory, components, environ)]


def _with(name: str, **data) -> dict:
    return HOSTS | {name: HOSTS[name] | data}


def test_a_good_inventory_has_no_problems_and_check_passes():
    assert _messages(_inventory()) == []
    check(_inventory(), ALL, ENV)


def test_validation_never_connects(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to connect")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    hosts = {name: data | {"ssh_hostname": "127.0.0.1"} for name, data in HOSTS.items()}
    assert _messages(_inventory(hosts=hosts)) == []
    assert _messages(_inventory(hosts=hosts, vault_addr=None, etcd_version="9.9.9")) != []


def test_check_raises_one_line_per_problem_naming_host_and_field():
    hosts = HOSTS | {"test-etcd-1": {}, "Etcd_2": {"private_ip": "10.108.0.12"}}
    groups = GROUPS | {"etcd": ["test-etcd-1", "Etcd_2", "test-etcd-3"]}
    with pytest.raises(ValidationError) as caught:
        check(_inventory(hosts=hosts, groups=groups), ALL, ENV)
    assert str(caught.value).splitlines() == [
        "Etcd_2: name: not an RFC 1123 label (a-z, 0-9, '-', at most 63)",
        "test-etcd-1: private_ip: missing (needed by cluster hosts)",
    ]
    assert caught.value.problems[1] == Problem(
        "test-etcd-1", "private_ip", "missing (needed by cluster hosts)"
    )


def test_host_names_must_be_rfc_1123_labels():
    hosts = HOSTS | {"w" * 64: {"private_ip": "10.108.0.30"}}
    groups = GROUPS | {"workers": ["test-worker-1", "w" * 64]}
    assert _messages(_inventory(hosts=hosts, groups=groups)) == [
        f"{'w' * 64}: name: not an RFC 1123 label (a-z, 0-9, '-', at most 63)"
    ]


def test_node_name_must_match_the_host_name():
    hosts = _with("test-worker-1", node_name="worker-one")
    assert _messages(_inventory(hosts=hosts)) == [
        "test-worker-1: node_name: 'worker-one' differs from the host name"
    ]


def test_cluster_hosts_need_a_private_ip():
    hosts = HOSTS | {"test-worker-1": {}}
    assert _messages(_inventory(hosts=hosts)) == [
        "test-worker-1: private_ip: missing (needed by cluster hosts)"
    ]


def test_hosts_outside_cluster_groups_need_no_private_ip():
    hosts = HOSTS | {"bastion": {}}
    assert _messages(_inventory(hosts=hosts)) == []


def test_private_ip_must_be_an_ip_address():
    hosts = _with("test-etcd-2", private_ip="10.108.0.256")
    assert _messages(_inventory(hosts=hosts)) == [
        "test-etcd-2: private_ip: '10.108.0.256' is not an IP address"
    ]


def test_private_addresses_must_be_unique():
    hosts = _with("test-worker-1", private_ip="10.108.0.11")
    assert _messages(_inventory(hosts=hosts)) == [
        "test-worker-1: private_ip: 10.108.0.11 is also used by test-etcd-1"
    ]


def test_the_etcd_group_must_not_be_empty():
    assert _messages(_inventory(groups=GROUPS | {"etcd": []}), {"etcd"}) == [
        "inventory: etcd: no hosts in group 'etcd'"
    ]


def test_an_even_etcd_member_count_is_refused_unless_allowed():
    groups = GROUPS | {"etcd": ["test-etcd-1", "test-etcd-2"]}
    assert _messages(_inventory(groups=groups), {"etcd"}) == [
        "inventory: etcd: 2 members: an even number adds no fault tolerance "
        "(use an odd number, or set etcd_allow_even_members = True)"
    ]
    allowed = _inventory(groups=groups, etcd_allow_even_members=True)
    assert _messages(allowed, {"etcd"}) == []


def test_a_version_needs_a_checksum_for_the_arch():
    assert _messages(_inventory(arch="arm64"), {"etcd"}) == [
        "inventory: etcd_checksums: no sha256 for etcd 3.5.30 on arm64"
    ]
    assert _messages(_inventory(etcd_version="3.5.31"), {"etcd"}) == [
        "inventory: etcd_checksums: no sha256 for etcd 3.5.31 on amd64"
    ]


def test_a_checksum_must_be_a_sha256_hex_digest():
    bad = {"3.5.30": {"amd64": "sha256:" + ETCD_SHA}}
    assert _messages(_inventory(etcd_checksums=bad), {"etcd"}) == [
        f"inventory: etcd_checksums: etcd 3.5.30 amd64: 'sha256:{ETCD_SHA}' is not a sha256"
    ]


def test_a_missing_version_is_reported():
    assert _messages(_inventory(etcd_version=None), {"etcd"}) == [
        "inventory: etcd_version: missing"
    ]


def test_a_problem_of_some_hosts_only_names_those_hosts():
    hosts = _with("test-etcd-3", etcd_version="3.6.0")
    assert _messages(_inventory(hosts=hosts), {"etcd"}) == [
        "test-etcd-3: etcd_checksums: no sha256 for etcd 3.6.0 on amd64"
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"pod_cidr": "10.244.0.1/16"}, "pod_cidr: '10.244.0.1/16' is not a network: "),
        ({"pod_cidr": None}, "pod_cidr: missing"),
        ({"node_cidrs": "10.108.0.0/20"}, "node_cidrs: must be a list of networks"),
        ({"pod_cidr": "10.96.0.0/20"}, "pod_cidr: 10.96.0.0/20 overlaps service_cidr 10.96.0.0/16"),
        ({"node_cidrs": ["10.0.0.0/8"]}, "pod_cidr: 10.244.0.0/16 overlaps node_cidrs 10.0.0.0/8"),
        ({"service_cidr": "10.96.0.0/32"}, "service_cidr: 10.96.0.0/32 has no room for the first"),
    ],
)
def test_networks_must_be_valid_and_disjoint(data, message):
    found = _messages(_inventory(**data), {"control_plane"})
    assert found and found[0].startswith(f"test-etcd-1: {message}"), found


def test_networks_are_only_checked_when_deploying_the_control_plane():
    assert _messages(_inventory(pod_cidr=None), {"etcd"}) == []


def test_the_control_plane_group_must_not_be_empty_when_deploying_it():
    inventory = _inventory(groups=GROUPS | {"control_plane": []})
    assert _messages(inventory, {"control_plane"}) == [
        "inventory: control_plane: no hosts in group 'control_plane'"
    ]
    assert _messages(inventory, {"etcd"}) == []


def test_a_cluster_without_monitoring_hosts_deploys_the_rest():
    """The monitoring group is optional: with no hosts in it, a whole-cluster deploy (which
    ends with the monitoring phase) has nothing to refuse."""
    assert "monitoring" not in GROUPS
    assert _messages(_inventory(), {"monitoring", "etcd"}) == []


def test_vault_address_is_needed_from_data_or_environment():
    assert _messages(_inventory(vault_addr=None), {"etcd"}) == [
        "inventory: vault: Vault address is not set: set vault_addr in group data or VAULT_ADDR "
        "in the environment"
    ]
    env = ENV | {"VAULT_ADDR": "https://vault.internal:8200"}
    assert _messages(_inventory(vault_addr=None), {"etcd"}, env) == []


def test_vault_credentials_are_needed_token_or_approle():
    assert _messages(_inventory(), {"etcd"}, {}) == [
        "inventory: vault: no Vault credentials: set vault_token_file (or VAULT_TOKEN), or "
        "vault_role_id (or VAULT_ROLE_ID) and vault_secret_id_file (or VAULT_SECRET_ID)"
    ]
    approle = {"VAULT_ROLE_ID": "role", "VAULT_SECRET_ID": "secret"}
    assert _messages(_inventory(), {"etcd"}, approle) == []


def test_unknown_components_are_refused():
    with pytest.raises(ValueError, match=r"unknown component\(s\) calico; known: .*\betcd\b"):
        problems(_inventory(), {"calico"}, ENV)


def test_first_service_ip_is_the_second_address_of_the_service_network():
    assert str(first_service_ip("10.96.0.0/12")) == "10.96.0.1"
    with pytest.raises(ValueError, match=r"no room"):
        first_service_ip("10.96.0.0/32")


INVENTORY_FILE = """
etcd = [("test-etcd-1", {"private_ip": "10.108.0.11"}),
        ("test-etcd-2", {"private_ip": "10.108.0.12"}),
        ("test-etcd-3", {"private_ip": "10.108.0.13"})]
control_plane = [("test-etcd-1", {"private_ip": "10.108.0.11"})]
"""
# In a child process: loading an inventory file imports pyinfra_cli, which monkey-patches
# the stdlib for gevent, and that must not leak into this test process.
RUN_VALIDATE_CLI = """
import sys
from galley.cli import main
path, *components = sys.argv[1:]
sys.exit(main(["validate", path, *(["--components", ",".join(components)] if components else [])]))
"""


def _validate_cli(cwd: Path, path: str, *components: str) -> subprocess.CompletedProcess:
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("VAULT_")}
    return subprocess.run(
        [sys.executable, "-c", RUN_VALIDATE_CLI, path, *components],
        cwd=cwd,
        env=inherited | ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _project(tmp_path: Path, all_data: dict) -> str:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "group_data").mkdir()
    (tmp_path / "inventories" / "test.py").write_text(INVENTORY_FILE)
    lines = [f"{key} = {value!r}" for key, value in all_data.items()]
    (tmp_path / "group_data" / "all.py").write_text("\n".join(lines) + "\n")
    return "inventories/test.py"


def test_validate_cli_loads_group_data_from_the_cwd_and_says_ok(tmp_path: Path):
    result = _validate_cli(tmp_path, _project(tmp_path, GOOD), "etcd", "control_plane")
    assert (result.returncode, result.stdout) == (0, "OK: 3 hosts\n"), result.stderr


def test_validate_cli_prints_problems_and_fails(tmp_path: Path):
    result = _validate_cli(tmp_path, _project(tmp_path, GOOD | {"arch": "arm64"}), "etcd")
    assert (result.returncode, result.stdout) == (
        1,
        "inventory: etcd_checksums: no sha256 for etcd 3.5.30 on arm64\n",
    ), result.stderr


def test_validate_cli_reports_an_inventory_it_cannot_load(tmp_path: Path):
    result = _validate_cli(tmp_path, "missing.py")
    assert result.returncode == 2
    assert "galley: cannot load missing.py: no such file" in result.stderr


def test_the_renewal_timer_as_deployed_must_come_round_in_every_ttls_last_third():
    short = {"etcd_cert_ttl": "60s", "kubernetes_cert_ttl": "60s"}
    ok = _inventory(**short, cert_renewal_interval="5s", cert_renewal_random_delay="2s")
    assert [str(p) for p in problems(ok, [CERT_RENEWAL], ENV)] == []
    # Left unset, the timer still gets its default random delay (15min): counted.
    unset_delay = _inventory(**short, cert_renewal_interval="5s")
    assert (
        "inventory: cert_renewal_interval: a renewal every 905s (interval plus random delay) "
        "leaves no second chance in the last third of etcd_cert_ttl 60s"
    ) in [str(p) for p in problems(unset_delay, [CERT_RENEWAL], ENV)]
    # Left unset, the interval is its default (1h): counted too.
    assert problems(_inventory(**short), [CERT_RENEWAL], ENV) != []


def test_hosts_that_name_another_vault_or_cluster_are_refused():
    hosts = _with("test-worker-1", vault_addr="https://other:8200") | {
        "test-etcd-3": HOSTS["test-etcd-3"] | {"cluster_name": "prod"}
    }
    assert [m for m in _messages(_inventory(hosts)) if "disagree" in m] == [
        "inventory: cluster_name: hosts disagree (test-etcd-1, test-etcd-2, test-worker-1: "
        "'test'; test-etcd-3: 'prod'): set it once, in group data",
        "inventory: vault_addr: hosts disagree (test-etcd-1, test-etcd-2, test-etcd-3: "
        "'http://127.0.0.1:8200'; test-worker-1: 'https://other:8200'): set it once, in "
        "group data",
    ]


def test_the_node_grace_period_must_outlast_the_kubelets_lease():
    """A grace period no longer than a heartbeat's lease would mark healthy Nodes NotReady;
    unset, each side keeps Kubernetes' default (50 s against 40 s)."""
    assert _messages(_inventory(), {"control_plane"}) == []
    assert _messages(_inventory(node_monitor_grace_seconds=20), {"control_plane"}) == [
        "test-etcd-1: node_monitor_grace_seconds: 20 s must be longer than the kubelets' node "
        "lease (40 s, kubelet_node_lease_seconds): Nodes would go NotReady between heartbeats"
    ]
    short_lease = _inventory(node_monitor_grace_seconds=20, kubelet_node_lease_seconds=12)
    assert _messages(short_lease, {"control_plane"}) == []
    assert _messages(_inventory(node_monitor_grace_seconds="20s"), {"control_plane"}) == [
        "test-etcd-1: node_monitor_grace_seconds: '20s' is not a count of at least 1"
    ]
