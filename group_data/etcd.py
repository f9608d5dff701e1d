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
# Scheduled snapshots: every member saves and checks a snapshot of itself
# (galley-etcd-snapshot.timer) every etcd_snapshot_interval (a systemd time span), keeps the
# newest etcd_snapshot_keep in etcd_snapshot_dir (owned by etcd, 0700; files 0600: they hold
# every Secret) and removes older ones; `galley report` flags a member whose newest is older
# than twice the interval.
etcd_snapshot_interval = "1h"
etcd_snapshot_keep = 24
etcd_snapshot_dir = "/var/lib/etcd-snapshots"
