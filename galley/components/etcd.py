"""etcd: the cluster's store, on the ``etcd`` group, with Vault-signed TLS for clients and peers.

The declaration: its release, certificates, config files, unit, snapshot timer and the KV value
it reads (the cluster's identity). Peers come from the inventory (`galley.etcd.group`). etcd
reads its whole configuration from environment files: ``etcd.env`` (everything but the
bootstrap; a change restarts the member) and ``bootstrap.env`` (``initial-cluster*``, which
etcd reads only with an empty data dir, so a change there restarts nothing). What a deploy
decides from the cluster and the unit's hooks (a new member's join, the rolling restart) are
etcd's runtime on a host, `galley.host.etcd`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render, render_text
from galley.components.model import (
    Cert,
    Component,
    Config,
    Configured,
    Crl,
    Directory,
    Metrics,
    Port,
    Timer,
    Unit,
    first_run_seconds,
    github_artifact,
)
from galley.components.node_exporter import METRICS_DIR
from galley.components.renewal import TIMER_UNIT as RENEWAL_TIMER
from galley.etcd.access import READ, EtcdUser, Grant
from galley.etcd.etcdctl import CACERT, ETCDUTL, etcdctl_command
from galley.etcd.group import initial_cluster, member_identity, member_name, members
from galley.etcd.identity import SECRET as CLUSTER_IDENTITY
from galley.etcd.layout import (
    BOOTSTRAP_PATH,
    CONFIG_DIR,
    DATA_DIR,
    ENV_PATH,
    HEALTHCHECK_CLIENT,
    HEALTHCHECK_STEM,
    MAINTENANCE_CLIENT,
    MAINTENANCE_STEM,
    PKI_DIR,
    SNAPSHOT_JOB,
    SNAPSHOT_SCRIPT,
    UNIT,
)
from galley.etcd.snapshot import TIME_FORMAT, snapshot_prefix
from galley.host import etcd as runtime
from galley.settings import ABSOLUTE_PATH, COUNT, SPAN, Setting, span_seconds
from galley.vault.pki import Identity, RoleSpec

# Scheduled snapshots: every member saves and checks a snapshot of itself every
# etcd_snapshot_interval, keeps the newest etcd_snapshot_keep in etcd_snapshot_dir (owned by
# etcd, 0700; files 0600: they hold every Secret) and removes older ones; `galley report`
# flags a member whose newest is older than twice the interval.
SNAPSHOT_INTERVAL = Setting("etcd_snapshot_interval", "1h", SPAN)
SNAPSHOT_KEEP = Setting("etcd_snapshot_keep", 24, COUNT)
SNAPSHOT_DIR = Setting("etcd_snapshot_dir", "/var/lib/etcd-snapshots", ABSOLUTE_PATH)
SNAPSHOT_SAVE_TIMEOUT = "5m"
SNAPSHOT_METRICS = f"{METRICS_DIR}/galley-etcd-snapshot.prom"

# The etcd CA's revocation list: etcd refuses a revoked client or peer certificate at the
# handshake (it reads the file again for every connection it accepts).
CRL = Crl(f"{PKI_DIR}/crl.pem", "etcd", CACERT)

# etcd server and peer certificate: CN = host name; SANs host name, localhost, IPs.
MEMBER_ROLE = RoleSpec("etcd-member", "etcd", server=True)


# What the health check may read once etcd's authorisation is on: `endpoint health` reads
# this key (etcd's /health on the metrics port needs no user).
HEALTH_KEY = "health"


def client_role(cn: str) -> RoleSpec:
    """The role of one etcd client identity: it signs exactly ``cn`` (no other names, no IP
    SANs), so a token for one client cannot get another's identity."""
    return RoleSpec(cn, "etcd")


def etcd_client_cert(
    stem: str,
    cn: str,
    directory: str,
    ca_path: str,
    grants: tuple[Grant, ...] | None = None,
    when=lambda host: True,
    reloaded=False,
    owner: str = "root",
) -> Cert:
    """An etcd client certificate with the identity ``cn`` (its own role), its key owned by
    ``owner``, which etcd lets do ``grants`` and nothing else (None: no etcd user, so no key
    at all, e.g. for a metrics scrape)."""
    return Cert(
        stem,
        directory,
        "etcd",
        client_role(cn),
        lambda host: Identity(cn),
        ca_path,
        owner,
        owner,
        when=when,
        reloaded=reloaded,
        etcd_user=None if grants is None else EtcdUser(cn, grants),
    )


def _member_cert(
    stem: str,
    role: RoleSpec,
    identity,
    ttl_key: str | None = None,
    etcd_user: EtcdUser | None = None,
) -> Cert:
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
        ttl_key,
        reloaded=True,
        etcd_user=etcd_user,
    )


def member_variables(host: Host) -> dict[str, Any]:
    """The variables of etcd.env and the unit for ``host``."""
    data = host.data
    return {
        "cluster_name": data.cluster_name,
        "member_name": member_name(host),
        "private_ip": data.private_ip,
        "client_port": data.etcd_client_port,
        "peer_port": data.etcd_peer_port,
        "metrics_port": data.etcd_metrics_port,
        "data_dir": DATA_DIR,
        "certs": ETCD.certs_by_stem(host),
        "env_path": ENV_PATH,
        "bootstrap_path": BOOTSTRAP_PATH,
        "crl_path": CRL.path,
    }


def snapshot_variables(host: Host) -> dict[str, Any]:
    """The variables of the scheduled snapshot's script, service and timer for ``host``:
    the member snapshots itself (its own client port) into ``etcd_snapshot_dir`` every
    ``etcd_snapshot_interval``, keeping the newest ``etcd_snapshot_keep``."""
    data = host.data
    interval = SNAPSHOT_INTERVAL.of(data)
    directory = SNAPSHOT_DIR.of(data)
    etcdctl = etcdctl_command([runtime.local_endpoint(host)], command_timeout=SNAPSHOT_SAVE_TIMEOUT)
    return {
        "member_name": member_name(host),
        "script_path": SNAPSHOT_SCRIPT,
        "snapshot_dir": directory,
        "keep": SNAPSHOT_KEEP.of(data),
        "interval": interval,
        "interval_seconds": span_seconds(interval),
        "first_run": f"{first_run_seconds(interval)}s",
        "shell": {
            "metrics": shlex.quote(SNAPSHOT_METRICS),
            "dir": shlex.quote(directory),
            "prefix": shlex.quote(snapshot_prefix(data.cluster_name)),
            "etcdctl": etcdctl,
            "etcdutl": shlex.quote(ETCDUTL),
            "date_format": shlex.quote(f"+{TIME_FORMAT}"),
        },
    }


def bootstrap_variables(host: Host, state: str, cluster: str) -> dict[str, Any]:
    """The variables of bootstrap.env (the deploy's and a joining member's, alike)."""
    return {
        "cluster_name": host.data.cluster_name,
        "initial_cluster": cluster,
        "initial_cluster_state": state,
    }


def _bootstrap_text(host: Host, state: str, cluster: str) -> str:
    """bootstrap.env as a joining member's hook writes it."""
    return render_text(ETCD.config(BOOTSTRAP_PATH), **bootstrap_variables(host, state, cluster))


def _leaving(host: Host) -> tuple[list[str], list[str]]:
    """What a member's host stops and deletes when `galley etcd remove` takes it out: etcd's
    timers and the host's certificate renewal (a deploy starts it again on a host that stays
    in another group); etcd's keys, certificates and revocation list."""
    units = [timer.timer_unit for timer in ETCD.timers] + [RENEWAL_TIMER]
    files = [path for c in ETCD.certs_of(host) for path in (c.key_path, c.cert_path)]
    return units, [*files, *(crl.path for crl in ETCD.crls)]


def member_hosts(hosts: Sequence[Host]) -> runtime.PyinfraMemberHosts:
    """The members' hosts as the membership executor drives them (a deploy's join, `galley
    etcd remove`, `galley etcd restore`)."""
    return runtime.PyinfraMemberHosts(hosts, _bootstrap_text, _leaving)


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    own = runtime.data_dir(host)
    identity = runtime.cluster_identity_of(host, context)
    if not own["empty"]:
        view = runtime.cluster_view(host.state)
        live = view.members if view else None
        runtime.note_unlisted(host, live)
        runtime.refuse_removed_member(host, live)
        if view is not None and view.reader.name == host.name:
            runtime.keep_identity(host, view, identity)
    exists = own["empty"] and any(
        not runtime.data_dir(other)["empty"] for other in members() if other != host
    )
    settings = runtime.bootstrap_settings(initial_cluster(members()), own, exists)
    variables = member_variables(host)
    files = {ENV_PATH: render(ETCD.config(ENV_PATH), **variables)}
    if settings is not None:
        files[BOOTSTRAP_PATH] = render(
            ETCD.config(BOOTSTRAP_PATH), **bootstrap_variables(host, *settings)
        )
    return Configured(files, variables, before_start=settings is None)


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
            "etcd_cert_ttl",
        ),
        _member_cert(
            HEALTHCHECK_STEM,
            client_role(HEALTHCHECK_CLIENT),
            lambda host: Identity(HEALTHCHECK_CLIENT),
            etcd_user=EtcdUser(HEALTHCHECK_CLIENT, (Grant(READ, HEALTH_KEY),)),
        ),
        # galley's own etcdctl calls on the member, and its snapshot timer (as etcd).
        _member_cert(
            MAINTENANCE_STEM,
            client_role(MAINTENANCE_CLIENT),
            lambda host: Identity(MAINTENANCE_CLIENT),
            etcd_user=EtcdUser(MAINTENANCE_CLIENT, root=True),
        ),
    ),
    configs=(
        Config(ENV_PATH, "etcd/etcd.env.j2", mode="640", group="etcd"),
        Config(BOOTSTRAP_PATH, "etcd/bootstrap.env.j2", mode="640", group="etcd", watched=False),
    ),
    unit=Unit(
        UNIT,
        "etcd/etcd.service.j2",
        restart=runtime.restart_member,
        serial=True,
        wait=runtime.wait_cluster_healthy,
        before_start=partial(runtime.join, bootstrap_text=_bootstrap_text),
    ),
    crls=(CRL,),
    secrets=(CLUSTER_IDENTITY,),
    ports=(
        Port(lambda host: host.data.etcd_client_port, ("etcd", "control_plane")),
        # flanneld's etcd client in flannel's etcd mode.
        Port(
            lambda host: host.data.etcd_client_port,
            ("workers",),
            when=lambda host: host.data.flannel_mode == "etcd",
        ),
        Port(lambda host: host.data.etcd_peer_port, ("etcd",)),
    ),
    metrics=(Metrics("etcd", lambda host: host.data.etcd_metrics_port, mount="etcd"),),
    timers=(
        Timer(
            SNAPSHOT_JOB,
            Config(SNAPSHOT_SCRIPT, f"etcd/{SNAPSHOT_JOB}.sh.j2", mode="755"),
            f"etcd/{SNAPSHOT_JOB}.service.j2",
            f"etcd/{SNAPSHOT_JOB}.timer.j2",
            snapshot_variables,
        ),
    ),
    directories=(
        Directory(DATA_DIR, "700", "etcd", "etcd"),
        Directory(CONFIG_DIR, "755"),
        Directory(PKI_DIR, "750", "root", "etcd"),
        Directory(SNAPSHOT_DIR.default, "700", "etcd", "etcd", setting=SNAPSHOT_DIR),
    ),
    settings=(SNAPSHOT_INTERVAL, SNAPSHOT_KEEP, SNAPSHOT_DIR),
    user="etcd",
    user_home=DATA_DIR,
    configure=_configure,
)
