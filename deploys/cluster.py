"""Deploy a whole cluster in one run: `pyinfra inventories/<region>.py deploys/cluster.py`.

Order: etcd, control plane, flannel, workers. Everything is validated before any host changes.
"""

from pyinfra import host

from galley.control_plane import control_plane
from galley.etcd import etcd_member
from galley.flannel import flannel
from galley.preflight import preflight
from galley.workers import worker

vault = preflight({"etcd", "control_plane", "flannel", "workers"})
if "etcd" in host.groups:
    etcd_member(vault=vault)
if "control_plane" in host.groups:
    control_plane(vault=vault)
flannel(vault=vault)
if "workers" in host.groups:
    worker(vault=vault)
