"""The cluster of inventories/terraform.py (an example: every host is in the group `terraform`)."""

cluster_name = "tf"
vault_addr = "https://vault.internal:8200"
# The VPC Terraform put the droplets in.
node_cidrs = ["10.108.0.0/20"]
# The host firewall (nftables on every droplet) lets SSH and the API in from these networks
# only: the operators' machines, a bastion, CI. Load balancers' source addresses go in
# firewall_load_balancer_cidrs, other ports in firewall_extra_rules (group_data/all.py).
firewall_operator_cidrs = ["10.108.0.2/32"]
