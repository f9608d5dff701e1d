"""Deploy the monitoring hosts: `pyinfra inventories/<region>.py deploys/monitoring.py`."""

from galley.converge import converge

converge("monitoring")
