"""Turn the lab's state into pyinfra inventory groups (used by inventories/lab.py)."""

from __future__ import annotations

from pathlib import Path

from galley.components.model import BASE_URL_KEYS, UPSTREAM_HOSTS
from galley.inventory import hostkeys
from galley.lab.artifacts import ARTIFACTS, DEBIAN_ARCH, KUBERNETES_VERSION, checksums
from galley.lab.services import REGISTRY_PORT
from galley.lab.state import CACHE_DIR, LAB_DIR, LabState
from galley.lab.topology import NETWORK, ROLES

Host = tuple[str, dict]


def lab_groups(state: LabState, overrides: dict | None = None) -> dict[str, list[Host]]:
    """Groups ``etcd``, ``control_plane`` and ``workers`` with each droplet's connection data.

    Every host carries what the lab replaces for production settings: its SSH key and pinned
    known_hosts, the cluster name, the Vault address, CA certificate and token file (never the
    token), and ``overrides`` (e.g. the artifact mirror's base URLs and checksums).
    """
    shared = {
        "cluster_name": state.cluster,
        "ssh_user": "root",
        "ssh_key": state.ssh_key,
        "ssh_known_hosts_file": state.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        **state.vault_data(),
        **(overrides or {}),
    }
    groups: dict[str, list[Host]] = {role: [] for role in ROLES}
    for droplet in state.droplets:
        data = {**shared, "ssh_hostname": droplet.address, "private_ip": droplet.address}
        if droplet.droplet_id:
            data["droplet_id"] = droplet.droplet_id
        for role in droplet.roles:
            groups[role].append((droplet.name, data))
    return groups


def pin_lab(
    groups: dict[str, list[Host]], state: LabState, inventory: str
) -> dict[str, list[Host]]:
    """Host keys pinned per droplet id as for DigitalOcean (`galley.inventory.hostkeys.pin`):
    a replaced droplet is a new id, a changed key on the same id stops the run, and an etcd or
    control-plane droplet the lab did not admit (`galley lab add`, `replace`) waits for
    `galley hostkeys accept`. A lab recorded before droplet ids keeps its one known_hosts."""
    if state.host_keys:
        entries = [entry for group in groups.values() for entry in group]
        with_ids = [(name, data) for name, data in entries if data.get("droplet_id")]
        hostkeys.pin(with_ids, Path(state.host_keys), inventory, hostkeys.guarded(groups))
    return groups


def lab_overrides(state: LabState, mirror_dir: Path = CACHE_DIR / "mirror") -> dict:
    """Settings the lab replaces: its mirror's downloads, versions and checksums.

    Each artifact the mirror carries becomes ``<key>_checksums = {version: {arch: sha256}}``
    and, when the mirror has only one version of it, ``<key>_version``; ``<key>`` is its name
    with "-" as "_" (``kube_apiserver``). ``kubernetes_version`` is the Kubernetes server
    binaries' version.
    """
    overrides: dict = {
        **{key: f"{state.mirror_url}/{UPSTREAM_HOSTS[b]}" for b, key in BASE_URL_KEYS.items()},
        "node_cidrs": [str(NETWORK)],
        # The operator is this machine, on the bridge. It also writes to etcd directly: the
        # test suite's writer loop proves no write fails while members change.
        "firewall_operator_cidrs": [f"{state.gateway}/32"],
        "firewall_extra_rules": [
            {"port": 2379, "protocol": "tcp", "from": [f"{state.gateway}/32"], "on": ["etcd"]}
        ],
        "kubernetes_version": KUBERNETES_VERSION,
        # The lab's image registry (galley.lab.images) mirrors every registry.
        "registry_mirror": f"http://{state.gateway}:{REGISTRY_PORT}",
        # A droplet is a container on this machine: its processes cannot lower their
        # oom_score_adj (no CAP_SYS_RESOURCE here) nor set the host-wide nf_conntrack_max.
        "containerd_restrict_oom_score_adj": True,
        "kube_proxy_conntrack_max_per_core": 0,
        # A heartbeat every 3 s: the tests of a lost apiserver see two within seconds.
        "kubelet_node_lease_seconds": 12,
        # A Node stopped heartbeating is NotReady after 20 s (Kubernetes' default: 50 s): the
        # tests see NodesNotReady fire and clear.
        "node_monitor_grace_seconds": 20,
        # Alerts within seconds: the tests see them fire and clear.
        "monitoring_scrape_interval": "5s",
        "monitoring_evaluation_interval": "1s",
        "monitoring_alert_after": "5s",
        # A run killed by a test is resumed at once: the next waits out its lease first.
        "lock_lease": "8s",
        # `galley checksums fetch --inventory inventories/lab.py` records the lab's own here.
        "checksums_file": str(LAB_DIR / "checksums.json"),
    }
    recorded = checksums(mirror_dir)
    versions: dict[str, set[str]] = {}
    for artifact in ARTIFACTS:
        key = artifact.name.replace("-", "_")
        versions.setdefault(key, set()).add(artifact.version)
        by_version = overrides.setdefault(f"{key}_checksums", {})
        by_version.setdefault(artifact.version, {})[DEBIAN_ARCH] = recorded[artifact.upstream_path]
    # A component the mirror carries in one version runs that version in the lab; one carried
    # in several (kubelet: the upgrade targets of rollouts) keeps its version from group data.
    for key, carried in versions.items():
        if len(carried) == 1:
            overrides[f"{key}_version"] = carried.pop()
    return overrides
