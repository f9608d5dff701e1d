"""The cluster of inventories/terraform.py (an example: every host is in the group `terraform`)."""

cluster_name = "tf"
vault_addr = "https://vault.internal:8200"
# The VPC Terraform put the droplets in.
node_cidrs = ["10.108.0.0/20"]
