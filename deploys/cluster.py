"""Deploy a whole cluster in one run: `pyinfra inventories/<region>.py deploys/cluster.py`.

Order: monitoring (it watches the rest come up), etcd, control plane, flannel, workers; each
phase is done on every host before the next starts anywhere. Everything is validated before
any host changes.
"""

from galley.converge import converge

converge("monitoring", "etcd", "control plane", "flannel", "workers")
