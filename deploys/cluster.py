"""Deploy a whole cluster in one run: `pyinfra inventories/<region>.py deploys/cluster.py`.

Order: etcd, control plane, flannel, workers, monitoring; each phase is done on every host
before the next starts anywhere. Everything is validated before any host changes.
"""

from galley.converge import converge

converge("etcd", "control plane", "flannel", "workers", "monitoring")
