"""Reading droplets from `terraform output -json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from galley.digitalocean import Droplet
from galley.inventory.terraform import TerraformError, droplets_from_outputs, load_droplets

# What `value = digitalocean_droplet.node` (with count) gives, trimmed to a few attributes.
RESOURCE = {
    "id": "412345678",
    "name": "etcd-1",
    "status": "active",
    "region": "nyc3",
    "size": "s-2vcpu-4gb",
    "tags": ["k8s-nyc3", "role:etcd"],
    "ipv4_address": "203.0.113.10",
    "ipv4_address_private": "10.108.0.10",
    "ipv6_address": "",
    "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
}
ETCD_1 = Droplet(
    id=412345678,
    name="etcd-1",
    status="active",
    tags=("k8s-nyc3", "role:etcd"),
    region="nyc3",
    size="s-2vcpu-4gb",
    private_ip="10.108.0.10",
    public_ip="203.0.113.10",
)


def _outputs(value, name: str = "droplets") -> dict:
    return {name: {"sensitive": False, "type": ["list", ["object", {}]], "value": value}}


def test_a_saved_output_file_with_a_list_gives_droplets(tmp_path: Path):
    saved = tmp_path / "outputs.json"
    saved.write_text(json.dumps(_outputs([RESOURCE])))
    assert load_droplets(saved) == [ETCD_1]


def test_a_map_output_uses_keys_as_missing_names_and_defaults_status_to_active():
    item = {key: value for key, value in RESOURCE.items() if key not in ("name", "status")}
    found = droplets_from_outputs(_outputs({"etcd-1": item}))
    assert found == [ETCD_1]


def test_another_output_name_can_be_chosen():
    assert droplets_from_outputs(_outputs([RESOURCE], name="nodes"), "nodes") == [ETCD_1]


def test_a_missing_output_lists_the_outputs_present():
    with pytest.raises(TerraformError, match=r"no Terraform output 'droplets' \(outputs: nodes\)"):
        droplets_from_outputs(_outputs([RESOURCE], name="nodes"))


def test_an_object_without_id_is_named_in_the_error():
    item = {key: value for key, value in RESOURCE.items() if key != "id"}
    with pytest.raises(TerraformError, match=r"droplets\[1\]: missing or non-numeric id"):
        droplets_from_outputs(_outputs([RESOURCE, item]))


def test_a_file_that_is_not_json_is_reported(tmp_path: Path):
    saved = tmp_path / "outputs.json"
    saved.write_text("Error: no state")
    with pytest.raises(TerraformError, match=r"not the JSON of `terraform output -json`"):
        load_droplets(saved)


def _fake_terraform(tmp_path: Path, script: str) -> Path:
    terraform = tmp_path / "terraform"
    terraform.write_text(f"#!/bin/sh\n{script}\n")
    terraform.chmod(0o755)
    return terraform


def test_a_directory_runs_terraform_output_json_there(tmp_path: Path):
    (tmp_path / "outputs.json").write_text(json.dumps(_outputs([RESOURCE])))
    args = tmp_path / "args"
    terraform = _fake_terraform(tmp_path, f'echo "$@" > {args}\ncat {tmp_path}/outputs.json')
    workdir = tmp_path / "infra"
    workdir.mkdir()
    assert load_droplets(workdir, terraform=str(terraform)) == [ETCD_1]
    assert args.read_text().split() == [f"-chdir={workdir}", "output", "-json"]


def test_a_failing_terraform_reports_its_stderr(tmp_path: Path):
    terraform = _fake_terraform(tmp_path, 'echo "Error: Backend init required" >&2; exit 1')
    with pytest.raises(TerraformError, match=r"failed: Error: Backend init required"):
        load_droplets(tmp_path, terraform=str(terraform))


def test_a_missing_terraform_suggests_a_saved_file(tmp_path: Path):
    with pytest.raises(TerraformError, match=r"terraform output -json > droplets.json"):
        load_droplets(tmp_path, terraform=str(tmp_path / "no-such-terraform"))
