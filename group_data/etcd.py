"""etcd members: version, release checksums, ports and certificate lifetime."""

etcd_version = "3.5.30"
# sha256 of the upstream release tarballs etcd-v<version>-linux-<arch>.tar.gz, per version and
# architecture (as published upstream; cross-checked with kubespray's checksums.yml).
etcd_checksums = {
    "3.5.30": {
        "amd64": "a495115162845640be08c6cda069ff961260dbced53207c5a83b1b006ff2ea8e",
        "arm64": "4d19473d2567a58e1dbf556e0813b91d506666e58d23bfd5370660c67639eb5e",
    },
}
# An even member count tolerates no more failures than one fewer member; refuse it by default.
etcd_allow_even_members = False
etcd_client_port = 2379
etcd_peer_port = 2380
etcd_metrics_port = 2381
# Leaf certificates; galley re-signs when less than a third of the lifetime is left.
etcd_cert_ttl = "720h"
