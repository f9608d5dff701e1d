"""Deploy the etcd cluster: `pyinfra inventories/<region>.py deploys/etcd.py`."""

from pyinfra import host

from galley.etcd import etcd_member
from galley.preflight import preflight

vault = preflight({"etcd"})
if "etcd" in host.groups:
    etcd_member(vault=vault)
