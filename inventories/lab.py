"""The local lab as a pyinfra inventory: `pyinfra inventories/lab.py deploys/etcd.py`.

Reads the state `galley lab up` recorded; SSH key, pinned host keys, Vault and the artifact
mirror come from it, so no flags or environment variables are needed.
"""

from galley.inventory.validate import checked
from galley.lab.inventory import lab_groups, lab_overrides
from galley.lab.state import LabState

_state = LabState.load()
if _state is None:
    raise SystemExit("galley: no lab is up: run `galley lab up` first")

_groups = checked(lab_groups(_state, lab_overrides(_state)), __file__)
etcd = _groups["etcd"]
control_plane = _groups["control_plane"]
workers = _groups["workers"]
