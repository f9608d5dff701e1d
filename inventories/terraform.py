"""Example: droplets from Terraform outputs (shape in galley/terraform.py).

Reads GALLEY_TERRAFORM_OUTPUT (a Terraform directory or a saved `terraform output -json`
file), else ../terraform next to this directory; other settings are in galley/inventory/sources.py.
"""

from pathlib import Path

from galley.inventory.sources import terraform_groups

_groups = terraform_groups(Path(__file__).resolve().parent.parent / "terraform")
etcd = _groups["etcd"]
control_plane = _groups["control_plane"]
workers = _groups["workers"]
