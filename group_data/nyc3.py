"""The nyc3 cluster (every host of inventories/nyc3.py is in the group `nyc3`)."""

cluster_name = "nyc3"
vault_addr = "https://vault.internal:8200"
# The region's VPC: node addresses come from it; pod and service networks must not overlap it.
node_cidrs = ["10.108.0.0/20"]
