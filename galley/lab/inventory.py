"""Turn the lab's state into pyinfra inventory groups (used by inventories/lab.py)."""

from __future__ import annotations

from pathlib import Path

from galley.lab.artifacts import ARTIFACTS, DEBIAN_ARCH, checksums
from galley.lab.state import CACHE_DIR, LabState
from galley.lab.topology import NETWORK, ROLES

Host = tuple[str, dict]


def lab_groups(state: LabState, overrides: dict | None = None) -> dict[str, list[Host]]:
    """Groups ``etcd``, ``control_plane`` and ``workers`` with each droplet's connection data.

    Every host carries what the lab replaces for production settings: its SSH key and pinned
    known_hosts, the cluster name, the Vault address and token, and ``overrides`` (e.g. the
    artifact mirror's base URLs and checksums).
    """
    shared = {
        "cluster_name": state.cluster,
        "ssh_user": "root",
        "ssh_key": state.ssh_key,
        "ssh_known_hosts_file": state.known_hosts,
        "ssh_strict_host_key_checking": "yes",
        "vault_addr": state.vault_addr,
        "vault_token": state.vault_token,
        **(overrides or {}),
    }
    groups: dict[str, list[Host]] = {role: [] for role in ROLES}
    for droplet in state.droplets:
        data = {**shared, "ssh_hostname": droplet.address, "private_ip": droplet.address}
        for role in droplet.roles:
            groups[role].append((droplet.name, data))
    return groups


def lab_overrides(state: LabState, mirror_dir: Path = CACHE_DIR / "mirror") -> dict:
    """Settings the lab replaces: download from its mirror, with the mirror's checksums.

    Each artifact the mirror carries becomes ``<name>_checksums = {version: {arch: sha256}}``.
    """
    overrides: dict = {
        "github_base_url": f"{state.mirror_url}/github.com",
        "node_cidrs": [str(NETWORK)],
    }
    recorded = checksums(mirror_dir)
    for artifact in ARTIFACTS:
        by_version = overrides.setdefault(f"{artifact.name}_checksums", {})
        by_version.setdefault(artifact.version, {})[DEBIAN_ARCH] = recorded[artifact.upstream_path]
    return overrides
