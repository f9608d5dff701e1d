"""Deploy the control plane: `pyinfra inventories/<region>.py deploys/control_plane.py`."""

from galley.converge import converge

converge("control plane")
