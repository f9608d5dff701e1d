"""Deploy flannel on every node: `pyinfra inventories/<region>.py deploys/flannel.py`."""

from galley.converge import converge

converge("flannel")
