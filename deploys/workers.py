"""Deploy the workers: `pyinfra inventories/<region>.py deploys/workers.py`."""

from pyinfra import host

from galley.preflight import preflight
from galley.workers import worker

vault = preflight({"workers"})
if "workers" in host.groups:
    worker(vault=vault)
