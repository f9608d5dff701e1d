"""Droplets in NYC3 tagged `k8s-nyc3` (GALLEY_CLUSTER_TAG overrides), from the DigitalOcean API.

Needs DIGITALOCEAN_TOKEN; other settings are described in galley/inventory/sources.py.
"""

from galley.inventory.sources import digitalocean_groups
from galley.inventory.validate import checked

_groups = checked(digitalocean_groups("k8s-nyc3"), __file__)
etcd = _groups["etcd"]
control_plane = _groups["control_plane"]
workers = _groups["workers"]
monitoring = _groups["monitoring"]
