"""etcd members: binaries, Vault-signed TLS, configuration and a systemd unit.

Restarts are durable and rolling: a member restarts when the files it runs from (binary link,
config, unit, certificates) are newer than its start, whether this run or an interrupted earlier
one wrote them, and members restart one at a time, each only while every other member is
healthy, and the next only once it is healthy again.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

import hvac
from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import files, python, server, systemd

from galley.facts.etcd import CACERT, CERT, ETCDCTL, KEY
from galley.pki import Identity, etcd_member_identity, mount_path
from galley.release import active_paths, install_release
from galley.restarts import restart_when_pending, systemctl_restart, wait_until_healthy
from galley.tls import HostCert, host_certificates

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BINARIES = ("etcd", "etcdctl", "etcdutl")
UNIT = "etcd"
UNIT_PATH = "/etc/systemd/system/etcd.service"
CONFIG_DIR = "/etc/etcd"
CONFIG_PATH = f"{CONFIG_DIR}/etcd.conf.yml"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/etcd"
HEALTHCHECK_CLIENT = "etcd-healthcheck-client"
# Files a running member depends on: newer than its start means it must restart.
WATCHED = (
    *active_paths("etcd", "etcd"),
    CONFIG_PATH,
    UNIT_PATH,
    CACERT,
    f"{PKI_DIR}/member.crt",
    f"{PKI_DIR}/member.key",
)
HEALTH_TIMEOUT = 60.0


class EtcdRestartError(Exception):
    """A member could not be restarted safely, or did not come back healthy."""


def member_name(member: Host) -> str:
    """The etcd member name of an inventory host (its host name unless ``etcd_name`` is set)."""
    return member.data.get("etcd_name") or member.name


def members() -> list[Host]:
    """The hosts of the ``etcd`` group, in inventory order."""
    return list(inventory.get_group("etcd", []))


def initial_cluster(hosts: Sequence[Host], peer_port: int) -> str:
    """etcd's ``initial-cluster`` value: ``name=https://ip:peer_port`` for every member."""
    return ",".join(f"{member_name(h)}=https://{h.data.private_ip}:{peer_port}" for h in hosts)


def client_endpoints(hosts: Sequence[Host], client_port: int) -> list[str]:
    """The client URLs of all members."""
    return [f"https://{h.data.private_ip}:{client_port}" for h in hosts]


def release_url(data) -> str:
    """Where the etcd release tarball of ``data.etcd_version`` is downloaded from."""
    version, arch = data.etcd_version, data.arch
    return (
        f"{data.github_base_url.rstrip('/')}/etcd-io/etcd/releases/download/v{version}/"
        f"etcd-v{version}-linux-{arch}.tar.gz"
    )


def etcdctl_command(endpoints: Sequence[str], *args: str) -> str:
    """An etcdctl command using the member's health-check client certificate."""
    return " ".join(
        [
            ETCDCTL,
            f"--endpoints={','.join(endpoints)}",
            f"--cacert={CACERT}",
            f"--cert={CERT}",
            f"--key={KEY}",
            "--dial-timeout=3s",
            "--command-timeout=5s",
            *map(shlex.quote, args),
        ]
    )


@deploy("etcd member")
def etcd_member(vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start this host's etcd member."""
    data = host.data
    cluster = data.cluster_name
    peers = members()
    client_port, peer_port = data.etcd_client_port, data.etcd_peer_port

    server.user(
        name="etcd system user",
        user="etcd",
        system=True,
        home=DATA_DIR,
        shell="/usr/sbin/nologin",
        create_home=False,
    )
    files.directory(
        name=f"etcd data {DATA_DIR}", path=DATA_DIR, user="etcd", group="etcd", mode="700"
    )
    files.directory(
        name=f"etcd config {CONFIG_DIR}", path=CONFIG_DIR, user="root", group="root", mode="755"
    )
    files.directory(name=f"etcd TLS {PKI_DIR}", path=PKI_DIR, user="root", group="etcd", mode="750")

    release = install_release(
        "etcd",
        data.etcd_version,
        release_url(data),
        data.etcd_checksums[data.etcd_version][data.arch],
        list(BINARIES),
    )

    mount = mount_path(cluster, "etcd")
    certs = host_certificates(
        name="etcd certificates",
        certs=[
            HostCert(
                key_path=f"{PKI_DIR}/member.key",
                cert_path=f"{PKI_DIR}/member.crt",
                ca_path=CACERT,
                identity=etcd_member_identity(member_name(host), data.private_ip),
                mount=mount,
                role="etcd-member",
                owner="etcd",
                group="etcd",
                ttl=data.etcd_cert_ttl,
            ),
            HostCert(
                key_path=KEY,
                cert_path=CERT,
                ca_path=CACERT,
                identity=Identity(HEALTHCHECK_CLIENT),
                mount=mount,
                role="etcd-client",
                owner="etcd",
                group="etcd",
                ttl=data.etcd_cert_ttl,
            ),
        ],
        vault=vault,
    )

    template_vars = {
        "cluster_name": cluster,
        "member_name": member_name(host),
        "private_ip": data.private_ip,
        "client_port": client_port,
        "peer_port": peer_port,
        "metrics_port": data.etcd_metrics_port,
        "data_dir": DATA_DIR,
        "pki_dir": PKI_DIR,
        "config_path": CONFIG_PATH,
        "initial_cluster": initial_cluster(peers, peer_port),
        "initial_cluster_state": "new",
    }
    config = files.template(
        name="etcd configuration",
        src=str(TEMPLATES / "etcd.conf.yml.j2"),
        dest=CONFIG_PATH,
        user="root",
        group="etcd",
        mode="640",
        **template_vars,
    )
    unit = files.template(
        name="etcd systemd unit",
        src=str(TEMPLATES / "etcd.service.j2"),
        dest=UNIT_PATH,
        user="root",
        group="root",
        mode="644",
        **template_vars,
    )
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit.did_change)
    started = systemd.service(
        name="etcd started and enabled", service=UNIT, running=True, enabled=True
    )
    endpoints = client_endpoints(peers, client_port)
    python.call(
        name="Wait for the etcd cluster to be healthy",
        function=_wait_cluster_healthy,
        endpoints=endpoints,
        _if=started.did_change,
    )

    restart_when_pending(
        UNIT,
        WATCHED,
        [release.activation, *certs, config, unit],
        started,
        function=_restart_member,
        serial=True,
        name="Rolling restart of etcd (only if its files changed)",
        endpoints=endpoints,
    )


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


def _unhealthy(host: Host, endpoints: Sequence[str]) -> str | None:
    """The unhealthy endpoints with their errors, as seen from ``host``; None when all are ok."""
    health = _endpoint_health(host, endpoints)
    return ", ".join(f"{endpoint} ({error})" for endpoint, error in health.items() if error) or None


def _wait_cluster_healthy(state: State, host: Host, endpoints: list[str]) -> None:
    problem = wait_until_healthy(lambda: _unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise EtcdRestartError(
            f"{host.name}: etcd cluster not healthy after {HEALTH_TIMEOUT:.0f}s: {problem}"
        )


def _restart_member(state: State, host: Host, unit: str, endpoints: list[str]) -> None:
    """Restart this member only while all others are healthy; hand off leadership first."""
    own = f"https://{host.data.private_ip}:{host.data.etcd_client_port}"
    others = [endpoint for endpoint in endpoints if endpoint != own]
    problem = _unhealthy(host, others)
    if problem:
        raise EtcdRestartError(
            f"{host.name}: not restarting etcd while other members are unhealthy: {problem}"
        )
    _hand_off_leadership(host, own, others)
    systemctl_restart(state, host, unit)
    problem = wait_until_healthy(lambda: _unhealthy(host, endpoints), HEALTH_TIMEOUT)
    if problem:
        raise EtcdRestartError(
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
