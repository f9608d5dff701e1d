"""Example: droplets from Terraform outputs (shape in galley/inventory/terraform.py).

Reads GALLEY_TERRAFORM_OUTPUT (a Terraform directory or a saved `terraform output -json`
file), else ../terraform next to this directory; other settings are in galley/inventory/sources.py.
"""

from pathlib import Path

from galley.inventory.sources import terraform_groups
from galley.inventory.validate import checked

_groups = checked(terraform_groups(Path(__file__).resolve().parent.parent / "terraform"), __file__)
etcd = _groups["etcd"]
control_plane = _groups["control_plane"]
workers = _groups["workers"]
monitoring = _groups["monitoring"]
