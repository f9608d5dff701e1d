"""Deploy the etcd cluster: `pyinfra inventories/<region>.py deploys/etcd.py`."""

from galley.converge import converge

converge("etcd")
