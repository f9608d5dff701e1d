"""The nyc3 cluster (every host of inventories/nyc3.py is in the group `nyc3`)."""

cluster_name = "nyc3"
vault_addr = "https://vault.internal:8200"
# Vault secrets never go in data: the token (or an AppRole's secret ID) comes from VAULT_TOKEN
# (VAULT_SECRET_ID) in the environment or from a file on the operator's machine, e.g.:
# vault_token_file = "/etc/galley/nyc3/vault-token"
# vault_ca_cert = "/etc/galley/nyc3/vault-ca.pem"  # when Vault's CA is not a system one
# The region's VPC: node addresses come from it; pod and service networks must not overlap it.
node_cidrs = ["10.108.0.0/20"]
# The host firewall (nftables on every droplet) lets SSH and the API in from these networks
# only: the operators' machines, a bastion, CI. Load balancers' source addresses go in
# firewall_load_balancer_cidrs, other ports in firewall_extra_rules (group_data/all.py).
firewall_operator_cidrs = ["10.108.0.2/32"]
