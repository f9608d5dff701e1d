"""etcd: the cluster's store, on the ``etcd`` group, with Vault-signed TLS for clients and peers.

Peers come from the inventory (member name = host name, private IP). Restarts are durable and
rolling: a member restarts when the files it runs from are newer than its start, one member
at a time, each only while every other member is healthy, leadership handed off first, and
the next only once the cluster is healthy again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pyinfra import inventory
from pyinfra.api.host import Host
from pyinfra.api.state import State

from galley.components.engine import render
from galley.components.model import (
    Cert,
    Component,
    Config,
    Configured,
    Directory,
    Unit,
    github_artifact,
)
from galley.etcdctl import CACERT, etcdctl_command
from galley.host.restarts import RestartError, systemctl_restart, wait_until_healthy
from galley.pki import Identity, RoleSpec

CONFIG_DIR = "/etc/etcd"
CONFIG_PATH = f"{CONFIG_DIR}/etcd.conf.yml"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/etcd"
HEALTHCHECK_CLIENT = "etcd-healthcheck-client"
HEALTH_TIMEOUT = 60.0

# etcd server and peer certificate: CN = host name; SANs host name, localhost, IPs.
MEMBER_ROLE = RoleSpec(
    "etcd-member",
    "etcd",
    ("{cluster}-*",),
    server=True,
    glob_names=True,
    localhost=True,
    ip_sans=True,
)


def member_name(member: Host) -> str:
    """The etcd member name of an inventory host (its host name unless ``etcd_name`` is set)."""
    return member.data.get("etcd_name") or member.name


def members() -> list[Host]:
    """The hosts of the ``etcd`` group, in inventory order."""
    return list(inventory.get_group("etcd", []))


def member_identity(host_name: str, private_ip: str) -> Identity:
    """An etcd member's identity: CN host name, SANs host name, localhost and its IPs."""
    return Identity(host_name, (host_name, "localhost"), (private_ip, "127.0.0.1"))


def initial_cluster(hosts: Sequence[Host], peer_port: int) -> str:
    """etcd's ``initial-cluster`` value: ``name=https://ip:peer_port`` for every member."""
    return ",".join(f"{member_name(h)}=https://{h.data.private_ip}:{peer_port}" for h in hosts)


def client_endpoints(hosts: Sequence[Host]) -> list[str]:
    """The client URLs of all members (each member's own port)."""
    return [f"https://{h.data.private_ip}:{h.data.etcd_client_port}" for h in hosts]


def client_role(cn: str) -> RoleSpec:
    """The role of one etcd client identity: it signs exactly ``cn`` (no other names, no IP
    SANs), so a token for one client cannot get another's identity."""
    return RoleSpec(cn, "etcd", (cn,))


def etcd_client_cert(
    stem: str, cn: str, directory: str, ca_path: str, when=lambda host: True, reloaded=False
) -> Cert:
    """An etcd client certificate with the identity ``cn`` (its own role)."""
    return Cert(
        stem,
        directory,
        "etcd",
        client_role(cn),
        lambda host: Identity(cn),
        ca_path,
        when=when,
        reloaded=reloaded,
    )


def _member_cert(stem: str, role: RoleSpec, identity) -> Cert:
    # etcd loads its certificate and key again for every TLS handshake (client and peer), and
    # never reads the health check client's: renewing either needs no restart.
    return Cert(
        stem,
        PKI_DIR,
        "etcd",
        role,
        identity,
        CACERT,
        "etcd",
        "etcd",
        "etcd_cert_ttl",
        reloaded=True,
    )


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    data = host.data
    variables = {
        "cluster_name": data.cluster_name,
        "member_name": member_name(host),
        "private_ip": data.private_ip,
        "client_port": data.etcd_client_port,
        "peer_port": data.etcd_peer_port,
        "metrics_port": data.etcd_metrics_port,
        "data_dir": DATA_DIR,
        "pki_dir": PKI_DIR,
        "config_path": CONFIG_PATH,
        "initial_cluster": initial_cluster(members(), data.etcd_peer_port),
        "initial_cluster_state": "new",
    }
    return Configured({CONFIG_PATH: render(ETCD.config(CONFIG_PATH), **variables)}, variables)


def _endpoint_health(host: Host, endpoints: Sequence[str]) -> dict[str, str | None]:
    """Each endpoint's health as seen from ``host``: None when healthy, else the error."""
    _, output = host.run_shell_command(
        etcdctl_command(endpoints, "endpoint", "health", "-w", "json") + " 2>/dev/null"
    )
    health: dict[str, str | None] = {endpoint: "no answer" for endpoint in endpoints}
    try:
        for entry in json.loads(output.stdout or "[]"):
            health[entry["endpoint"]] = None if entry.get("health") else entry.get("error", "?")
    except (ValueError, KeyError, TypeError):
        pass
    return health


def unhealthy(host: Host, endpoints: Sequence[str]) -> str | None:
    """The unhealthy endpoints with their errors, as seen from ``host``; None when all are ok."""
    health = _endpoint_health(host, endpoints)
    return ", ".join(f"{endpoint} ({error})" for endpoint, error in health.items() if error) or None


def _wait_cluster_healthy(state: State, host: Host, unit: str) -> None:
    endpoints = client_endpoints(members())
    problem = wait_until_healthy(lambda: unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise RestartError(
            f"{host.name}: etcd cluster not healthy after {HEALTH_TIMEOUT:.0f}s: {problem}"
        )


def _restart_member(state: State, host: Host, unit: str) -> None:
    """Restart this member only while all others are healthy; hand off leadership first."""
    endpoints = client_endpoints(members())
    own = f"https://{host.data.private_ip}:{host.data.etcd_client_port}"
    others = [endpoint for endpoint in endpoints if endpoint != own]
    problem = unhealthy(host, others)
    if problem:
        raise RestartError(
            f"{host.name}: not restarting etcd while other members are unhealthy: {problem}"
        )
    _hand_off_leadership(host, own, others)
    systemctl_restart(state, host, unit)
    problem = wait_until_healthy(lambda: unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise RestartError(
            f"{host.name}: etcd not healthy {HEALTH_TIMEOUT:.0f}s after its restart: "
            f"{problem}; stopping before any other member restarts"
        )


def _hand_off_leadership(host: Host, own: str, others: Sequence[str]) -> None:
    """If this member leads, move leadership to another so writes do not wait for an election."""
    if not others:
        return
    ok, output = host.run_shell_command(
        etcdctl_command([own, *others], "endpoint", "status", "-w", "json") + " 2>/dev/null"
    )
    if not ok:
        return
    statuses = json.loads(output.stdout or "[]")
    by_endpoint = {s["Endpoint"]: s["Status"] for s in statuses}
    mine = by_endpoint.get(own)
    if not mine or mine["leader"] != mine["header"]["member_id"]:
        return
    successor = by_endpoint.get(others[0])
    if successor:
        host.log("moving etcd leadership to another member before the restart")
        host.run_shell_command(
            etcdctl_command([own], "move-leader", format(successor["header"]["member_id"], "x"))
        )


ETCD = Component(
    name="etcd",
    group="etcd",
    phase="etcd",
    artifacts=(
        github_artifact(
            "etcd",
            "etcd-io/etcd",
            "etcd-v{version}-linux-{arch}.tar.gz",
            "SHA256SUMS",
            ("etcd", "etcdctl", "etcdutl"),
        ),
    ),
    certs=(
        _member_cert(
            "member",
            MEMBER_ROLE,
            lambda host: member_identity(member_name(host), host.data.private_ip),
        ),
        _member_cert(
            "healthcheck-client",
            client_role(HEALTHCHECK_CLIENT),
            lambda host: Identity(HEALTHCHECK_CLIENT),
        ),
    ),
    configs=(Config(CONFIG_PATH, "etcd/etcd.conf.yml.j2", mode="640", group="etcd"),),
    unit=Unit(
        "etcd",
        "etcd/etcd.service.j2",
        restart=_restart_member,
        serial=True,
        wait=_wait_cluster_healthy,
    ),
    directories=(
        Directory(DATA_DIR, "700", "etcd", "etcd"),
        Directory(CONFIG_DIR, "755"),
        Directory(PKI_DIR, "750", "root", "etcd"),
    ),
    user="etcd",
    user_home=DATA_DIR,
    configure=_configure,
)
