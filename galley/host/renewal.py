"""The files a host's own certificate renewal runs from, and the deploy step installing them.

`render_script` gives the shell script (bash, openssl, curl, coreutils: nothing else on the
host) for a host's `galley.renewal.HostRenewal`; `render_units` its systemd service and timer;
`install_renewal` puts them, the host identity certificate and Vault's CA on the host. The
script records its outcome in `STATE_PATH` (``key=value`` lines), which
`galley.facts.renewal.RenewalStatus` reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import hvac
import jinja2
from pyinfra import host
from pyinfra.api.host import Host

from galley.components.engine import UnitFiles, directories, install_certificates, write
from galley.components.model import (
    SYSTEMD_DIR,
    TEMPLATES,
    Config,
    Directory,
    first_run_seconds,
    span_seconds,
)
from galley.facts.renewal import STATE_DIR, STATE_PATH
from galley.host.observed import Wanted
from galley.host.restarts import RESTART_LOCK
from galley.renewal import HOST_IDENTITY, IDENTITY_DIR, HostRenewal, auth_path, plan

SCRIPT_PATH = "/usr/local/sbin/galley-renew-certs"
VAULT_CA_PATH = f"{IDENTITY_DIR}/vault-ca.pem"  # the CA Vault's listener is verified with
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # Debian's bundle, for a public Vault
UNIT = "galley-cert-renewal"
SERVICE_PATH = f"{SYSTEMD_DIR}/{UNIT}.service"
TIMER_PATH = f"{SYSTEMD_DIR}/{UNIT}.timer"
# The renewal's own directories and their modes (the identity key is in the first).
DIRECTORIES = ((IDENTITY_DIR, "700"), (STATE_DIR, "755"))
# Group data keys of the schedule, with their defaults (systemd time spans).
SCHEDULE_DEFAULTS = {"cert_renewal_interval": "1h", "cert_renewal_random_delay": "15min"}


@dataclass(frozen=True)
class ScriptSettings:
    """Where the script finds Vault and keeps its state; how hard it retries."""

    vault_addr: str
    vault_ca: str = VAULT_CA_PATH
    state_path: str = STATE_PATH
    systemctl: str = "systemctl"
    restart_lock: str = RESTART_LOCK  # shared with the deploy's restarts on the host
    attempts: int = 5
    backoff: int = 10  # seconds before the second attempt, doubling after each


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES / "renewal"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["q"] = lambda value: shlex.quote(str(value))
    return environment


def render_script(renewal: HostRenewal, settings: ScriptSettings) -> str:
    """The renewal script of one host (install it 0755 at `SCRIPT_PATH`)."""
    return (
        _environment()
        .get_template("galley-renew-certs.sh.j2")
        .render(
            host=renewal.host,
            certs=renewal.certs,
            login_path=f"auth/{auth_path(renewal.cluster)}/login",
            vault_addr=settings.vault_addr.rstrip("/"),
            vault_ca=settings.vault_ca,
            state_file=settings.state_path,
            systemctl=settings.systemctl,
            restart_lock=settings.restart_lock,
            attempts=settings.attempts,
            backoff=settings.backoff,
        )
    )


def render_units(data: Mapping[str, Any]) -> dict[str, str]:
    """The service and timer, by path, with the schedule from group data ``data``."""
    environment = _environment()
    schedule = {key: str(data.get(key) or default) for key, default in SCHEDULE_DEFAULTS.items()}
    return {
        SERVICE_PATH: environment.get_template("galley-cert-renewal.service.j2").render(
            script_path=SCRIPT_PATH, timeout="30min"
        ),
        TIMER_PATH: environment.get_template("galley-cert-renewal.timer.j2").render(
            interval=schedule["cert_renewal_interval"],
            random_delay=schedule["cert_renewal_random_delay"],
            first_run=f"{first_run_seconds(schedule['cert_renewal_interval'])}s",
        ),
    }


def wanted(target: Host) -> Wanted:
    """What `install_renewal` decides on for ``target`` (see `galley.host.observed`)."""
    found = Wanted(paths={path for path, _ in DIRECTORIES}, units={f"{UNIT}.timer"})
    found.files([VAULT_CA_PATH, SCRIPT_PATH, SERVICE_PATH, TIMER_PATH, HOST_IDENTITY.ca_path])
    found.keys.add(HOST_IDENTITY.key_path)
    found.certs.add(HOST_IDENTITY.cert_path)
    return found


def install_renewal(vault: Callable[[], hvac.Client]) -> UnitFiles:
    """Keep this host renewing its own certificates: its host identity certificate (the
    login), Vault's CA, the script, and the timer running it. `galley.converge` has the
    host's last phase call it (`deploy_components`' ``also``), which enables and starts the
    timer with the phase's units."""
    renewal = plan(host)
    data = host.data
    directories({path: Directory(path, mode) for path, mode in DIRECTORIES})
    install_certificates(host, [HOST_IDENTITY], vault)
    interval = span_seconds(data.get("cert_renewal_interval") or "1h") or 3600
    settings = ScriptSettings(
        vault_addr=data.get("vault_host_addr") or data.vault_addr,
        attempts=4,
        # Retries (1 + 2 + 4 backoffs) take about a tenth of the interval: a failure is on
        # record well before the next run.
        backoff=max(1, interval // 70),
    )
    if data.get("vault_ca_cert"):
        with open(str(data.vault_ca_cert), encoding="utf-8") as ca:
            write(Config(VAULT_CA_PATH), ca.read(), name=f"Vault's CA {VAULT_CA_PATH}")
    else:  # a Vault with a publicly trusted certificate
        settings = replace(settings, vault_ca=SYSTEM_CAS)
    write(
        Config(SCRIPT_PATH, mode="755"),
        render_script(renewal, settings),
        name=f"renewal script {SCRIPT_PATH}",
    )
    units = {path: write(Config(path), text) for path, text in render_units(data).items()}
    return UnitFiles(units, {f"{UNIT}.timer": units[TIMER_PATH]})
