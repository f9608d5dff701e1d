"""cert-renewal: every host renews its own certificates (`galley.vault.renewal` has the Vault
side and why a host's credential can renew nothing else).

A systemd timer runs a shell script (bash, openssl, curl, coreutils: nothing else on the host)
that logs in with the host's identity certificate and renews each certificate galley keeps on
the host, with a fresh key, when a third of its lifetime is left. The script records its outcome in
`STATE_PATH` (``key=value`` lines), which `galley.facts.renewal.RenewalStatus` reads. It runs
on every host, deployed with the last phase a run deploys there (with that phase's units).
"""

from __future__ import annotations

import ipaddress
import posixpath
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import write
from galley.components.model import (
    Cert,
    Component,
    Config,
    Configured,
    Directory,
    Timer,
    first_run_seconds,
)
from galley.components.node_exporter import METRICS_DIR
from galley.facts.renewal import STATE_DIR, STATE_PATH
from galley.host.restarts import RESTART_LOCK, RUN_DIR
from galley.host.tls import GENPKEY_OPTIONS
from galley.settings import CIDRS, SPAN, Setting, span_seconds
from galley.vault.pki import Identity, mount_path
from galley.vault.renewal import (
    FORBIDDEN_ORGANIZATIONS,
    HOST_IDENTITY_ROLE,
    HostRenewal,
    RenewalCert,
    RenewalCrl,
    auth_path,
    host_role,
)

IDENTITY_DIR = "/etc/galley/renewal"
SCRIPT_PATH = "/usr/local/sbin/galley-renew-certs"
VAULT_CA_PATH = f"{IDENTITY_DIR}/vault-ca.pem"  # the CA Vault's listener is verified with
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle, for a public Vault
UNIT = "galley-cert-renewal"
TIMER_UNIT = f"{UNIT}.timer"
# The deploy signs each host's identity (the renewal's login); on the host it renews itself.
# It lives as long as the host's servers' certificates: Vault binds its login to the host's
# own addresses, and a host offline longer than it lives needs a deploy to come back.
HOST_IDENTITY = Cert(
    "host-identity",
    IDENTITY_DIR,
    "host",
    HOST_IDENTITY_ROLE,
    lambda host: Identity(host.name),
    f"{IDENTITY_DIR}/host-ca.crt",
    ttl_key="kubernetes_cert_ttl",
)
INTERVAL = Setting("cert_renewal_interval", "1h", SPAN)
RANDOM_DELAY = Setting("cert_renewal_random_delay", "15min", SPAN)
# Where Vault sees a host's renewal come from (default: its own private and public address;
# set it when Vault sits behind a proxy or NAT that hides them).
SOURCE_CIDRS = Setting("vault_renewal_source_cidrs", None, CIDRS)


@dataclass(frozen=True)
class ScriptSettings:
    """Where the script finds Vault and keeps its state; how hard it retries."""

    vault_addr: str
    vault_ca: str = VAULT_CA_PATH
    state_path: str = STATE_PATH
    metrics_path: str = f"{METRICS_DIR}/galley-cert-renewal.prom"
    period_seconds: int = 4500  # the longest two runs are apart: interval and random delay
    systemctl: str = "systemctl"
    restart_lock: str = RESTART_LOCK  # shared with the deploy's restarts on the host
    attempts: int = 5
    backoff: int = 10  # seconds before the second attempt, doubling after each

    def variables(self, renewal: HostRenewal) -> dict[str, Any]:
        """The script template's variables for ``renewal``."""
        return {
            "host_name": renewal.host,
            "certs": renewal.certs,
            "crls": renewal.crls,
            "login_path": f"auth/{auth_path(renewal.cluster)}/login",
            "vault_addr": self.vault_addr.rstrip("/"),
            "vault_ca": self.vault_ca,
            "state_file": self.state_path,
            "metrics_file": self.metrics_path,
            "period_seconds": self.period_seconds,
            "systemctl": self.systemctl,
            "restart_lock": self.restart_lock,
            "genpkey_options": GENPKEY_OPTIONS,
            "attempts": self.attempts,
            "backoff": self.backoff,
            "q": shlex.quote,
        }


def plan(host: Host, components: Sequence[Component]) -> HostRenewal:
    """``host``'s certificates in Vault, given the ``components`` it runs: its host identity
    and every certificate they keep on it, each signed (by the deploy and by the host's own
    renewal) only with a role of its own, and the revocation lists they check. ValueError
    when one names a forbidden organization (``system:masters``) or two share a stem."""
    cluster = host.data.cluster_name
    certs = {HOST_IDENTITY.cert_path: (HOST_IDENTITY, HOST_IDENTITY.identity(host))}
    for component in components:
        for cert in component.certs_of(host):
            certs.setdefault(cert.cert_path, (cert, cert.identity(host)))
    chosen: list[RenewalCert] = []
    for cert, identity in certs.values():
        if forbidden := FORBIDDEN_ORGANIZATIONS.intersection(identity.organization):
            raise ValueError(
                f"{host.name}: {cert.cert_path} names {', '.join(sorted(forbidden))}, which "
                "only the operator's admin credential may carry"
            )
        chosen.append(
            RenewalCert(
                stem=cert.stem,
                key_path=cert.key_path,
                cert_path=cert.cert_path,
                ca_path=cert.ca_path,
                mount=mount_path(cluster, cert.mount),
                role=host_role(host.name, cert.stem),
                base_role=cert.role,
                identity=identity,
                owner=cert.owner,
                group=cert.group,
                ttl=host.data.get(cert.lifetime_key),
                units=tuple(
                    c.unit.name
                    for c in components
                    if c.unit is not None and cert.cert_path in c.watched(host)
                ),
            )
        )
    roles = [cert.role for cert in chosen]
    if len(set(roles)) != len(roles):
        raise ValueError(f"{host.name}: two certificates share a stem: {', '.join(roles)}")
    own = [host.data.get("private_ip"), host.data.get("public_ip")]
    sources = SOURCE_CIDRS.of(host.data) or [address for address in own if address]
    crls = {
        crl.path: RenewalCrl(crl.path, mount_path(cluster, crl.mount), crl.ca_path)
        for component in components
        for crl in component.crls
    }
    return HostRenewal(
        host.name,
        cluster,
        tuple(chosen),
        tuple(map(_as_vault_reads, sources)),
        tuple(crls.values()),
    )


def _as_vault_reads(source: str) -> str:
    """A network as Vault reads a bound CIDR back: an address alone for a single host."""
    network = ipaddress.ip_network(source, strict=False)
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def script_settings(host: Host) -> ScriptSettings:
    """How ``host``'s script reaches Vault: its address for hosts, the CA its listener is
    verified with, retries that take about a tenth of the interval (a failure is on record
    well before the next run)."""
    data = host.data
    interval = span_seconds(INTERVAL.of(data)) or 3600
    settings = ScriptSettings(
        vault_addr=data.get("vault_host_addr") or data.vault_addr,
        attempts=4,
        backoff=max(1, interval // 70),
        period_seconds=interval + (span_seconds(RANDOM_DELAY.of(data)) or 0),
    )
    return settings if data.get("vault_ca_cert") else replace(settings, vault_ca=SYSTEM_CAS)


def cert_renewal(plan_of: Callable[[Host], HostRenewal]) -> Component:
    """The cert-renewal component; ``plan_of`` gives a host's `HostRenewal` (the registry
    knows which components a host runs)."""

    def variables(host: Host) -> dict[str, Any]:
        interval = str(INTERVAL.of(host.data))
        renewal = plan_of(host)
        return {
            **script_settings(host).variables(renewal),
            "script_path": SCRIPT_PATH,
            # All the sandboxed service may write (and /run/galley, its runtime directory).
            "writable": [
                *sorted(
                    {posixpath.dirname(c.cert_path) for c in renewal.certs}
                    | {posixpath.dirname(crl.path) for crl in renewal.crls}
                ),
                STATE_DIR,
                METRICS_DIR,
            ],
            "run_dir": RUN_DIR.removeprefix("/run/"),
            "timeout": "30min",
            "interval": interval,
            "random_delay": str(RANDOM_DELAY.of(host.data)),
            "first_run": f"{first_run_seconds(interval)}s",
        }

    return Component(
        name="cert-renewal",
        group=None,
        phase="",
        certs=(HOST_IDENTITY,),
        configs=(Config(VAULT_CA_PATH, when=lambda host: bool(host.data.get("vault_ca_cert"))),),
        timers=(
            Timer(
                UNIT,
                Config(SCRIPT_PATH, "renewal/galley-renew-certs.sh.j2", mode="755"),
                f"renewal/{UNIT}.service.j2",
                f"renewal/{UNIT}.timer.j2",
                variables,
            ),
        ),
        directories=(Directory(IDENTITY_DIR, "700"), Directory(STATE_DIR, "755")),
        settings=(INTERVAL, RANDOM_DELAY, SOURCE_CIDRS),
        checks=("renewal",),
        configure=_configure,
    )


def _configure(host: Host, context: Any) -> Configured:
    """Vault's CA, where the inventory names one (a public Vault needs none)."""
    path = host.data.get("vault_ca_cert")
    if not path:
        return Configured()
    with open(str(path), encoding="utf-8") as ca:
        text = ca.read()
    return Configured(
        files={VAULT_CA_PATH: write(Config(VAULT_CA_PATH), text, f"Vault's CA {VAULT_CA_PATH}")}
    )
