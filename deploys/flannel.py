"""Deploy flannel on every node: `pyinfra inventories/<region>.py deploys/flannel.py`."""

from galley.flannel import flannel
from galley.preflight import preflight

flannel(vault=preflight({"flannel"}))
