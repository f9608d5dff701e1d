"""The files a host's own certificate renewal runs from.

`render_script` gives the shell script (bash, openssl, curl, coreutils: nothing else on the
host) for a host's `galley.renewal.HostRenewal`; `render_units` its systemd service and timer.
The script records its outcome in `STATE_PATH` (``key=value`` lines), which
`galley.facts.renewal.RenewalStatus` reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from galley.components.model import SYSTEMD_DIR, TEMPLATES
from galley.facts.renewal import STATE_PATH
from galley.renewal import IDENTITY_DIR, HostRenewal, auth_path

SCRIPT_PATH = "/usr/local/sbin/galley-renew-certs"
VAULT_CA_PATH = f"{IDENTITY_DIR}/vault-ca.pem"  # the CA Vault's listener is verified with
UNIT = "galley-cert-renewal"
# Group data keys of the schedule, with their defaults (systemd time spans).
SCHEDULE_DEFAULTS = {"cert_renewal_interval": "1h", "cert_renewal_random_delay": "15min"}


@dataclass(frozen=True)
class ScriptSettings:
    """Where the script finds Vault and keeps its state; how hard it retries."""

    vault_addr: str
    vault_ca: str = VAULT_CA_PATH
    state_path: str = STATE_PATH
    systemctl: str = "systemctl"
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
            attempts=settings.attempts,
            backoff=settings.backoff,
        )
    )


def render_units(data: Mapping[str, Any]) -> dict[str, str]:
    """The service and timer, by path, with the schedule from group data ``data``."""
    environment = _environment()
    schedule = {key: str(data.get(key) or default) for key, default in SCHEDULE_DEFAULTS.items()}
    return {
        f"{SYSTEMD_DIR}/{UNIT}.service": environment.get_template(
            "galley-cert-renewal.service.j2"
        ).render(script_path=SCRIPT_PATH, timeout="30min"),
        f"{SYSTEMD_DIR}/{UNIT}.timer": environment.get_template(
            "galley-cert-renewal.timer.j2"
        ).render(
            interval=schedule["cert_renewal_interval"],
            random_delay=schedule["cert_renewal_random_delay"],
            boot_delay="5min",
        ),
    }
