"""The one etcdctl command builder, shared by the etcd deploy, the etcd facts and day-2 work.

Defaults match galley's host layout: ``/usr/local/bin/etcdctl`` and the member's maintenance
client certificate (etcd's root) below ``/etc/etcd/pki`` (readable by root and etcd only); the
health checks present the health check's identity (`HEALTH_CERT`), which may read nothing
else. Every call is bounded: a dead member cannot hang a deploy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from galley.etcd.layout import HEALTHCHECK_STEM, MAINTENANCE_STEM, PKI_DIR

ETCDCTL = "/usr/local/bin/etcdctl"
ETCDUTL = "/usr/local/bin/etcdutl"
LOCAL_ENDPOINT = "https://127.0.0.1:2379"
CACERT = f"{PKI_DIR}/ca.crt"
CERT = f"{PKI_DIR}/{MAINTENANCE_STEM}.crt"
KEY = f"{PKI_DIR}/{MAINTENANCE_STEM}.key"
HEALTH_CERT = f"{PKI_DIR}/{HEALTHCHECK_STEM}.crt"
HEALTH_KEY = f"{PKI_DIR}/{HEALTHCHECK_STEM}.key"
DIAL_TIMEOUT = "3s"
COMMAND_TIMEOUT = "5s"


def etcdctl_flags(
    endpoints: Sequence[str],
    cacert: str = CACERT,
    cert: str = CERT,
    key: str = KEY,
    command_timeout: str = COMMAND_TIMEOUT,
) -> list[str]:
    """Global flags: endpoints, TLS files (an empty one is left out) and both timeouts."""
    flags = [
        f"--endpoints={','.join(endpoints)}",
        f"--dial-timeout={DIAL_TIMEOUT}",
        f"--command-timeout={command_timeout}",
    ]
    return flags + [
        f"--{flag}={path}"
        for flag, path in (("cacert", cacert), ("cert", cert), ("key", key))
        if path
    ]


def etcdctl_command(
    endpoints: Sequence[str], *args: str, etcdctl: str = ETCDCTL, **flags: str
) -> str:
    """A shell-quoted etcdctl command line (``flags`` as `etcdctl_flags` takes them)."""
    words = [etcdctl, *etcdctl_flags(endpoints, **flags), *args]
    return " ".join(map(shlex.quote, words))


def member_hex_id(value: int | None) -> str | None:
    """Render an etcd member id (uint64) the way etcdctl does: lowercase hex; 0 means none."""
    return format(value, "x") if value else None
