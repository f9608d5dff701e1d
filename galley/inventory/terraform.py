"""Read droplets from Terraform's `terraform output -json`.

Expected shape: one output (default name `droplets`) whose value is a list or a map of
objects with the attributes of `digitalocean_droplet`; the simplest is the resource itself:

    output "droplets" {
      value = digitalocean_droplet.node   # count gives a list, for_each a map
    }

Each object needs `id` and `name` (a map key stands in for a missing name) and may give
`ipv4_address_private`, `ipv4_address`, `region`, `size`, `tags` and `status` (default
"active": Terraform creates droplets and waits until they are active).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from galley.digitalocean import Droplet

OUTPUT_NAME = "droplets"


class TerraformError(Exception):
    """Terraform outputs could not be read or do not have the expected shape."""


def read_outputs(source: str | Path, terraform: str = "terraform") -> dict[str, Any]:
    """Outputs from a saved `terraform output -json` file, or by running it in a directory."""
    path = Path(source)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
    elif path.is_dir():
        text = _run_output(path, terraform)
    else:
        raise TerraformError(f"{path}: no such file or directory")
    try:
        outputs = json.loads(text)
    except ValueError as exc:
        raise TerraformError(f"{path}: not the JSON of `terraform output -json`: {exc}") from exc
    if not isinstance(outputs, dict):
        raise TerraformError(f"{path}: expected a JSON object of outputs")
    return outputs


def droplets_from_outputs(
    outputs: Mapping[str, Any], output_name: str = OUTPUT_NAME
) -> list[Droplet]:
    """Droplets described by the output `output_name` (see the module docstring for the shape)."""
    if output_name not in outputs:
        present = ", ".join(sorted(outputs)) or "none"
        raise TerraformError(f"no Terraform output {output_name!r} (outputs: {present})")
    value = outputs[output_name]
    value = value.get("value") if isinstance(value, Mapping) else None
    if isinstance(value, Mapping):
        items = [(f"{output_name}[{key!r}]", str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{output_name}[{index}]", "", item) for index, item in enumerate(value)]
    else:
        raise TerraformError(f"output {output_name!r}: value must be a list or map of droplets")
    return [_droplet(where, default_name, item) for where, default_name, item in items]


def load_droplets(
    source: str | Path, output_name: str = OUTPUT_NAME, terraform: str = "terraform"
) -> list[Droplet]:
    """Droplets from a Terraform directory or a saved `terraform output -json` file."""
    return droplets_from_outputs(read_outputs(source, terraform), output_name)


def _run_output(directory: Path, terraform: str) -> str:
    command = [terraform, f"-chdir={directory}", "output", "-json"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise TerraformError(
            f"{terraform!r} not found; install Terraform or pass a file saved with "
            "`terraform output -json > droplets.json`"
        ) from exc
    if result.returncode != 0:
        raise TerraformError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def _droplet(where: str, default_name: str, item: Any) -> Droplet:
    if not isinstance(item, Mapping):
        raise TerraformError(f"{where}: expected an object, got {type(item).__name__}")
    try:
        droplet_id = int(item["id"])
    except (KeyError, TypeError, ValueError):
        raise TerraformError(f"{where}: missing or non-numeric id") from None
    name = item.get("name") or default_name
    if not name:
        raise TerraformError(f"{where}: missing name")
    return Droplet(
        id=droplet_id,
        name=name,
        status=item.get("status") or "active",
        tags=tuple(item.get("tags") or ()),
        region=item.get("region") or "",
        size=item.get("size") or "",
        private_ip=item.get("ipv4_address_private") or None,
        public_ip=item.get("ipv4_address") or None,
    )
