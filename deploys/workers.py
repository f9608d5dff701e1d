"""Deploy the workers: `pyinfra inventories/<region>.py deploys/workers.py`."""

from galley.converge import converge

converge("workers")
