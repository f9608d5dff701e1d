"""Where inventories come from and how they are checked: loading, DigitalOcean and Terraform
sources, host-key pinning, validation."""
