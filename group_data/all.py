"""Settings shared by every host of every cluster. Inventories and group files override them."""

arch = "amd64"
# Release downloads: upstream by default; the lab points this at its mirror.
github_base_url = "https://github.com"
# Cluster networks. They must not overlap the droplets' VPC (node_cidrs, set per region):
# DigitalOcean's default VPCs sit in 10.0.0.0/8, so the cluster's networks avoid it.
pod_cidr = "172.16.0.0/16"
service_cidr = "172.20.0.0/16"
# A node's pod subnet (flannel's per-node lease; the controller manager's node CIDRs).
node_cidr_mask_size = 24

# Kubernetes. Binaries come from <dl_k8s_base_url>/release/v<version>/bin/linux/<arch>/.
kubernetes_version = "1.33.5"
dl_k8s_base_url = "https://dl.k8s.io"
cluster_domain = "cluster.local"
api_port = 6443
# What clients dial for the API: a load balancer's DNS name or IP in front of the apiservers.
# None: every worker runs a node-local proxy (HAProxy, `api-proxy`) on 127.0.0.1:<api_port>
# in front of every apiserver. A name must look like api.<cluster>.<domain> (the Vault role of
# the apiserver certificate allows exactly that).
api_endpoint = None
# Leaf certificates of the Kubernetes components' servers (and each host's renewal identity).
kubernetes_cert_ttl = "720h"
# Every client identity on the hosts (kubelet, kube-proxy, the controller manager's and the
# scheduler's, the apiserver's etcd and kubelet clients, flannel's, etcd's health check, the
# monitoring scrapes): renewed hourly with a third left, so a copy of one, which no CRL stops
# at kube-apiserver, works at most this long.
client_cert_ttl = "48h"

# Prometheus' node exporter on every host (its private address, for the monitoring hosts).
node_exporter_version = "1.11.1"

# flannel: "kube" (--kube-subnet-mgr: leases in the Node objects, workers hold no etcd
# credentials) or "etcd" (network config written once to etcd, flannel gets an etcd client
# certificate). The backend goes into net-conf.json as is.
flannel_mode = "kube"
flannel_backend = {"Type": "vxlan", "VNI": 1, "Port": 8472}

# The host firewall (nftables, galley.components.host_firewall): inbound traffic only to the
# ports galley's components declare, from the groups that need them; SSH and the API also
# from firewall_operator_cidrs (set per cluster: required while the firewall is on).
host_firewall = True
# Load balancers' source addresses: their health checks (kube-proxy) and the API behind them.
firewall_load_balancer_cidrs = []
# More open ports: [{"port": 9100, "protocol": "tcp", "from": ["control_plane", "10.0.0.0/8"]}]
firewall_extra_rules = []
# New rules that cut this machine's SSH to a host are rolled back by the host after this long.
firewall_rollback_seconds = 30
