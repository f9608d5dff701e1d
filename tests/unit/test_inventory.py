"""Building inventory groups from droplets, and the inventory files that do it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galley.digitalocean import Droplet
from galley.inventory import hostkeys
from galley.inventory.sources import (
    InventoryError,
    digitalocean_groups,
    groups_from_droplets,
    ssh_settings,
)
from tests.standins.digitalocean_api import droplet, serve

REPO = Path(__file__).resolve().parents[2]
TAG = "k8s-nyc3"
TOKEN = "dop_v1_test"


def _droplet(name: str, *roles: str, status: str = "active", **kwargs) -> Droplet:
    fields = {
        "id": 100 + len(name),
        "status": status,
        "tags": (TAG, *(f"role:{role}" for role in roles)),
        "region": "nyc3",
        "size": "s-2vcpu-4gb",
        "private_ip": "10.108.0.2",
        "public_ip": "203.0.113.2",
    }
    return Droplet(name=name, **(fields | kwargs))


def _names(entries) -> list[str]:
    return [name for name, _ in entries]


def test_droplets_join_every_group_their_role_tags_name():
    droplets = [
        _droplet("w-1", "worker"),
        _droplet("cp-1", "control-plane", "etcd"),
        _droplet("etcd-1", "etcd"),
    ]
    groups = groups_from_droplets(droplets, TAG)
    assert _names(groups["etcd"]) == ["cp-1", "etcd-1"]
    assert _names(groups["control_plane"]) == ["cp-1"]
    assert _names(groups["workers"]) == ["w-1"]


def test_host_data_follows_the_data_contract_and_connects_privately_by_default():
    droplets = [_droplet("etcd-1", "etcd", id=42, private_ip="10.1.0.5", public_ip="198.51.100.5")]
    ((name, data),) = groups_from_droplets(droplets, TAG)["etcd"]
    assert (name, data) == (
        "etcd-1",
        {
            "private_ip": "10.1.0.5",
            "public_ip": "198.51.100.5",
            "droplet_id": 42,
            "region": "nyc3",
            "size": "s-2vcpu-4gb",
            "ssh_hostname": "10.1.0.5",
        },
    )


def test_connect_via_public_uses_the_public_address():
    droplets = [_droplet("etcd-1", "etcd", public_ip="198.51.100.5")]
    ((_, data),) = groups_from_droplets(droplets, TAG, connect_via="public")["etcd"]
    assert data["ssh_hostname"] == "198.51.100.5"


def test_a_droplet_without_the_address_to_connect_to_is_an_error():
    droplets = [_droplet("etcd-1", "etcd", public_ip=None)]
    with pytest.raises(InventoryError, match=r"etcd-1 \(id \d+\) has no public IPv4 address"):
        groups_from_droplets(droplets, TAG, connect_via="public")


def test_droplets_that_are_not_active_are_left_out_and_reported(capsys):
    droplets = [
        _droplet("etcd-1", "etcd"),
        _droplet("etcd-2", "etcd", status="new"),
        _droplet("etcd-3", "etcd", status="off"),
    ]
    groups = groups_from_droplets(droplets, TAG)
    assert _names(groups["etcd"]) == ["etcd-1"]
    assert "not active: etcd-2 (new), etcd-3 (off)" in capsys.readouterr().err


def test_droplets_without_a_role_tag_are_reported(capsys):
    groups = groups_from_droplets([_droplet("bastion")], TAG)
    assert groups == {"etcd": [], "control_plane": [], "workers": [], "monitoring": []}
    assert (
        "without a role tag (role:etcd, role:control-plane, role:worker, role:monitoring): bastion"
        in (capsys.readouterr().err)
    )


def test_only_droplets_with_the_cluster_tag_are_used():
    stray = _droplet("etcd-9", "etcd", tags=("k8s-sfo3", "role:etcd"))
    groups = groups_from_droplets([_droplet("etcd-1", "etcd"), stray], TAG)
    assert _names(groups["etcd"]) == ["etcd-1"]


def test_duplicate_droplet_names_are_an_error_since_pyinfra_would_merge_them():
    droplets = [_droplet("etcd-1", "etcd", id=1), _droplet("etcd-1", "etcd", id=2)]
    with pytest.raises(InventoryError, match=r"must be unique.*etcd-1 \(ids 1, 2\)"):
        groups_from_droplets(droplets, TAG)


def test_ssh_settings_come_from_the_environment_and_unset_ones_are_left_out():
    environ = {"GALLEY_SSH_USER": "admin", "GALLEY_SSH_KNOWN_HOSTS": "/etc/galley/known_hosts"}
    assert ssh_settings(environ) == {
        "ssh_user": "admin",
        "ssh_known_hosts_file": "/etc/galley/known_hosts",
    }


def test_digitalocean_groups_needs_a_token():
    with pytest.raises(InventoryError, match=r"DIGITALOCEAN_TOKEN is not set"):
        digitalocean_groups(TAG, environ={})


def test_digitalocean_groups_reports_api_errors_as_inventory_errors():
    with serve([], TOKEN) as api:
        environ = {"DIGITALOCEAN_TOKEN": "wrong", "DIGITALOCEAN_API_URL": api.url}
        with pytest.raises(InventoryError, match=r"401 Unauthorized"):
            digitalocean_groups(TAG, environ=environ)


API_FLEET = [
    droplet(1, "nyc3-etcd-1", [TAG, "role:etcd", "role:control-plane"], private_ip="10.108.0.11"),
    droplet(2, "nyc3-etcd-2", [TAG, "role:etcd"], private_ip="10.108.0.12"),
    droplet(3, "nyc3-etcd-3", [TAG, "role:etcd"], private_ip="10.108.0.13"),
    droplet(4, "nyc3-worker-1", [TAG, "role:worker"], private_ip="10.108.0.21"),
    droplet(5, "sfo3-etcd-1", ["k8s-sfo3", "role:etcd"], private_ip="10.116.0.2"),
]


def _debug_inventory(inventory: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the real pyinfra CLI's debug-inventory (it does not connect) with only `env` set,
    from ``cwd`` with the repository's group data (the cluster names, as in production)."""
    if not (cwd / "group_data").exists():
        (cwd / "group_data").symlink_to(REPO / "group_data")
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GALLEY_", "DIGITALOCEAN_"))
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "pyinfra"), inventory, "debug-inventory", "--json"],
        cwd=cwd,
        env=inherited | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _hosts(result: subprocess.CompletedProcess) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {host["name"]: host for host in json.loads(result.stdout)}


def test_the_nyc3_inventory_file_reads_the_api_through_the_pyinfra_cli(tmp_path: Path):
    pins = tmp_path / "pins"
    with serve(API_FLEET, TOKEN) as api:

        def debug() -> subprocess.CompletedProcess:
            return _debug_inventory(
                str(REPO / "inventories" / "nyc3.py"),
                tmp_path,
                DIGITALOCEAN_TOKEN=TOKEN,
                DIGITALOCEAN_API_URL=api.url,
                GALLEY_SSH_USER="admin",
                GALLEY_KNOWN_HOSTS=str(pins),
            )

        refused = debug()
        # New etcd and control-plane droplets wait for admission; the worker does not.
        assert refused.returncode == 1
        assert "3 droplet(s) new to the etcd or control_plane group" in refused.stderr
        assert "nyc3-worker-1" not in refused.stderr
        hostkeys.admit(pins, [1, 2, 3])
        result = debug()
    hosts = _hosts(result)
    assert sorted(hosts) == ["nyc3-etcd-1", "nyc3-etcd-2", "nyc3-etcd-3", "nyc3-worker-1"]
    assert sorted(hosts["nyc3-etcd-1"]["groups"]) == ["control_plane", "etcd", "nyc3"]
    worker = hosts["nyc3-worker-1"]["data"]
    assert (worker["droplet_id"], worker["ssh_hostname"], worker["ssh_user"]) == (
        4,
        "10.108.0.21",
        "admin",
    )


def test_the_nyc3_inventory_file_fails_clearly_without_a_token(tmp_path: Path):
    result = _debug_inventory(str(REPO / "inventories" / "nyc3.py"), tmp_path)
    assert result.returncode == 1
    assert "pyinfra error" in result.stderr
    assert "DIGITALOCEAN_TOKEN is not set" in result.stderr


def test_the_terraform_inventory_file_reads_a_saved_output(tmp_path: Path):
    resource = {
        "id": "7",
        "name": "tf-etcd-1",
        "tags": ["role:etcd"],
        "ipv4_address_private": "10.108.0.7",
    }
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps({"droplets": {"value": [resource]}}))
    hostkeys.admit(tmp_path / "pins", [7])
    hosts = _hosts(
        _debug_inventory(
            str(REPO / "inventories" / "terraform.py"),
            tmp_path,
            GALLEY_TERRAFORM_OUTPUT=str(saved),
            GALLEY_KNOWN_HOSTS=str(tmp_path / "pins"),
        )
    )
    assert hosts["tf-etcd-1"]["groups"] == ["etcd", "terraform"]
    assert hosts["tf-etcd-1"]["data"]["droplet_id"] == 7
    assert hosts["tf-etcd-1"]["data"]["ssh_hostname"] == "10.108.0.7"
