"""The lab's host services: the apt proxy, the artifact mirror and the image registry (Vault:
galley.lab.openbao)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from galley.lab.system import LabError

APT_PROXY_PORT = 3142
MIRROR_PORT = 8080
REGISTRY_PORT = 5000
VAULT_ADDRESS = ("127.0.0.1", 8200)

ACNG_CONF = """\
CacheDir: {cache}
LogDir: {logs}
SupportDir: /usr/lib/apt-cacher-ng
BindAddress: {address}
Port: {port}
ForeGround: 1
ExThreshold: 4
Remap-debrep: file:deb_mirror*.gz /debian ; http://deb.debian.org/debian/
Remap-secdeb: security.debian.org deb.debian.org/debian-security ; http://deb.debian.org/debian-security/
"""


def apt_proxy_command(lab_dir: Path, cache_dir: Path, address: str) -> list[str]:
    """Write apt-cacher-ng's lab configuration and return the command that runs it."""
    conf_dir = lab_dir / "apt-cacher-ng"
    logs = conf_dir / "log"
    cache = cache_dir / "apt-cacher-ng"
    for directory in (logs, cache):
        directory.mkdir(parents=True, exist_ok=True)
    (conf_dir / "acng.conf").write_text(
        ACNG_CONF.format(cache=cache, logs=logs, address=address, port=APT_PROXY_PORT)
    )
    return ["apt-cacher-ng", "-c", str(conf_dir)]


def mirror_command(root: Path, address: str) -> list[str]:
    """The command serving the lab's release artifacts over HTTP on the bridge."""
    return [
        sys.executable,
        "-m",
        "galley.lab.mirror",
        "--listen",
        f"{address}:{MIRROR_PORT}",
        "--root",
        str(root),
    ]


REGISTRY_CONF = """\
# galley lab: the droplets' image registry (a mirror of every registry in their containerd).
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: false
http:
  addr: {address}:{port}
"""


def registry_command(lab_dir: Path, storage: Path, address: str) -> list[str]:
    """Write the registry's lab configuration (its images kept in ``storage``, the lab's
    cache, so a second `lab up` pushes nothing) and return the command that runs it."""
    storage.mkdir(parents=True, exist_ok=True)
    config = lab_dir / "registry.yml"
    config.write_text(REGISTRY_CONF.format(storage=storage, address=address, port=REGISTRY_PORT))
    return ["docker-registry", "serve", str(config)]


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_listening(name: str, host: str, port: int, pid_alive, timeout: float = 30) -> None:
    """Wait until ``name`` accepts connections on host:port; fail early if its process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_taken(host, port):
            return
        if not pid_alive():
            raise LabError(f"{name} exited at start; see its log in the lab directory")
        time.sleep(0.1)
    raise LabError(f"{name} did not listen on {host}:{port} within {timeout:.0f}s")
