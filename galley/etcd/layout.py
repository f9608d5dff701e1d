"""Where etcd lives on a host: the paths and names the component that deploys it, its
deploy-time hooks, its facts and the day-2 operations share."""

CONFIG_DIR = "/etc/etcd"
ENV_PATH = f"{CONFIG_DIR}/etcd.env"
BOOTSTRAP_PATH = f"{CONFIG_DIR}/bootstrap.env"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/etcd"
UNIT = "etcd"
# The client identities on every member (key and certificate ``PKI_DIR/<stem>.*``): the
# health check's, which may read etcd's health key only, and the maintenance identity, etcd's
# root, which galley's own etcdctl calls present (members, snapshots, facts, access).
HEALTHCHECK_CLIENT = "etcd-healthcheck-client"
HEALTHCHECK_STEM = "healthcheck-client"
MAINTENANCE_CLIENT = "etcd-maintenance-client"
MAINTENANCE_STEM = "maintenance-client"
# The members' scheduled snapshots: the timer's job and its script.
SNAPSHOT_JOB = "galley-etcd-snapshot"
SNAPSHOT_SCRIPT = f"/usr/local/sbin/{SNAPSHOT_JOB}"
# systemd's exit status when it could not put a job's process in its cgroup (219/CGROUP).
CGROUP_SETUP_FAILED = 219
# The membership journal, in the operator's directory of the cluster.
MEMBERSHIP_JOURNAL = "etcd-membership.json"
HEALTH_TIMEOUT = 60.0
# A bootstrapped member's bootstrap.env says ``existing`` (it has data; etcd no longer reads it).
SETTLE_COMMAND = (
    "sed -i 's/^ETCD_INITIAL_CLUSTER_STATE=new$/ETCD_INITIAL_CLUSTER_STATE=existing/' "
    + BOOTSTRAP_PATH
)
