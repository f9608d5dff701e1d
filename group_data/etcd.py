"""etcd members: version, ports and certificate lifetime."""

etcd_version = "3.5.30"
# The sha256 of each release is in the download catalogue, group_data/checksums.json.
# An even member count tolerates no more failures than one fewer member; refuse it by default.
etcd_allow_even_members = False
etcd_client_port = 2379
etcd_peer_port = 2380
etcd_metrics_port = 2381
# Leaf certificates; galley re-signs when less than a third of the lifetime is left.
etcd_cert_ttl = "720h"
# Scheduled snapshots: etcd_snapshot_interval, etcd_snapshot_keep and etcd_snapshot_dir, with
# their defaults (every hour, keep 24, /var/lib/etcd-snapshots) declared beside the etcd
# component (galley/components/etcd.py). Set them here to change them.
