"""Deploy the control plane: `pyinfra inventories/<region>.py deploys/control_plane.py`."""

from pyinfra import host

from galley.control_plane import control_plane
from galley.preflight import preflight

vault = preflight({"control_plane"})
if "control_plane" in host.groups:
    control_plane(vault=vault)
