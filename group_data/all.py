"""Settings shared by every host of every cluster. Inventories and group files override them."""

arch = "amd64"
# Release downloads: upstream by default; the lab points this at its mirror.
github_base_url = "https://github.com"
# Cluster networks. They must not overlap the droplets' VPC (node_cidrs, set per region):
# DigitalOcean's default VPCs sit in 10.0.0.0/8, so the cluster's networks avoid it.
pod_cidr = "172.16.0.0/16"
service_cidr = "172.20.0.0/16"
