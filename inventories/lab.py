"""The local lab as a pyinfra inventory: `pyinfra inventories/lab.py deploys/etcd.py`.

Reads the state `galley lab up` recorded; SSH key, Vault and the artifact mirror come from it,
so no flags or environment variables are needed. Host keys are pinned per simulated droplet
id as for DigitalOcean (`galley.lab.inventory.pin_lab`).
"""

from galley.inventory.validate import checked
from galley.lab.inventory import lab_groups, lab_overrides, pin_lab
from galley.lab.state import LabState

_state = LabState.load()
if _state is None:
    raise SystemExit("galley: no lab is up: run `galley lab up` first")

_groups = checked(
    pin_lab(lab_groups(_state, lab_overrides(_state)), _state, "inventories/lab.py"), __file__
)
etcd = _groups["etcd"]
control_plane = _groups["control_plane"]
workers = _groups["workers"]
monitoring = _groups["monitoring"]
