"""Deploy a whole cluster in one run: `pyinfra inventories/<region>.py deploys/cluster.py`.

Order: etcd, control plane, flannel, workers; each phase is done on every host before the
next starts anywhere. Everything is validated before any host changes.
"""

from pyinfra import host

from galley.control_plane import control_plane
from galley.etcd import etcd_member
from galley.flannel import flannel
from galley.phases import phase_done
from galley.preflight import preflight
from galley.workers import worker

vault = preflight({"etcd", "control_plane", "flannel", "workers"})
if "etcd" in host.groups:
    etcd_member(vault=vault)
phase_done(name="etcd done on all hosts", phase="etcd")
if "control_plane" in host.groups:
    control_plane(vault=vault)
phase_done(name="Control plane done on all hosts", phase="control plane")
flannel(vault=vault)
phase_done(name="flannel done on all hosts", phase="flannel")
if "workers" in host.groups:
    worker(vault=vault)
