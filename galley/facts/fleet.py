"""Fleet facts operators ask for that the other fact modules do not cover: which version of
each component is installed, current and actually running, and the host's flannel lease."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

from pyinfra.api import FactBase

from galley.facts.release import COMPLETE_MARKER, DEFAULT_PREFIX

FLANNEL_SUBNET_ENV = "/run/flannel/subnet.env"
_COMPONENTS = "##galley-components "
_CURRENT = "##galley-current "
_INSTALLED = "##galley-installed "
_RUNNING = "##galley-running "
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# "etcd Version: 3.5.30", "Kubernetes v1.30.2", "v0.25.1": the first dotted version printed.
# Build metadata ("+unknown", "+ds1") is not part of the version (semver precedence).
_VERSION = re.compile(r"\bv?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\+[0-9A-Za-z.-]+)?")


def _releases_script(base: str, releases: Iterable[str]) -> str:
    """Print every release's ``current`` link and complete version directories (relative to
    ``base``), with one ``find`` for all of them; a version directory that is itself a link
    is not followed."""
    names = " ".join(shlex.quote(release) for release in releases)
    return (
        f"cd {shlex.quote(base)} 2>/dev/null && find {names} -mindepth 1 -maxdepth 2 "
        f"\\( -name current -type l -printf '{_CURRENT}%h %l\\n' \\) -o "
        f"\\( -name {COMPLETE_MARKER} -type f -printf '{_INSTALLED}%h\\n' \\) 2>/dev/null"
    )


def _running_script(name: str, base: str) -> str:
    """Print the version of the program the next main PID (``$1``, then shifted) runs.

    ``/proc/<pid>/exe`` is the file the process was started from, even after an upgrade
    replaced or removed it, so this is the running version, not the installed one. A program
    run by a Python interpreter (the lab's stand-ins, which start from their resolved,
    versioned path) is named by its script, the first argument of its command line. A
    program galley installed runs from ``<base>/<version>/``: the version is read from that
    path, without running anything (on a busy host each process a report starts is most of
    its time); any other program is asked with ``--version``.
    """
    prefix = shlex.quote(f"{_RUNNING}{name} ")
    return (
        "pid=${1:-0}; [ $# -eq 0 ] || shift; "
        'if [ "$pid" != 0 ]; then exe="/proc/$pid/exe"; program=$(readlink "$exe"); '
        'case "$program" in */python*) '
        """args=$(tr '\\0' ' ' < "/proc/$pid/cmdline"); args=${args#* }; program=${args%% *}; """
        "python=1;; *) python=;; esac; "
        f"base={shlex.quote(base)}; "
        'case "$program" in "$base"/*/*) version=${program#"$base"/}; '
        f'echo {prefix}"v${{version%%/*}}";; '
        '*) if [ -n "$python" ]; then "$exe" "$program" --version; else "$exe" --version; fi '
        f'2>&1 | head -n 3 | sed "s/^/"{prefix}/;; esac; fi'
    )


class ComponentVersions(FactBase):
    """Installed, current and running version of each component, in one round trip.

    ``components`` are galley release names, each optionally ``release:unit`` when its
    systemd unit has another name (``flannel:flanneld``), or ``release:`` for a release no
    unit runs (``cni-plugins:``). Returns ``{"etcd": {"installed": ["3.5.29", "3.5.30"],
    "current": "3.5.30", "running": "3.5.30" | None}}``: ``installed`` the complete version
    directories and ``current`` the link's target, as `InstalledReleases` reads them;
    ``running`` what the unit's main process runs (None when not running). A handful of
    processes on the host whatever the number of components: one ``find``, one
    ``systemctl show`` and one ``readlink`` per running unit.
    """

    def command(
        self, components: str | Iterable[str] = ("etcd",), prefix: str = DEFAULT_PREFIX
    ) -> str:
        names = (components,) if isinstance(components, str) else tuple(components)
        if not names:
            raise ValueError("no components given")
        base = prefix.rstrip("/")
        releases, units = [], []
        for entry in names:
            name, colon, unit = entry.partition(":")
            unit = unit if colon else name
            if not _COMPONENT.fullmatch(name) or (unit and not _COMPONENT.fullmatch(unit)):
                raise ValueError(f"invalid component name: {entry!r}")
            releases.append(name)
            if unit:
                units.append((name, unit))
        parts = [f"echo {shlex.quote(_COMPONENTS + ' '.join(releases))}"]
        parts.append(_releases_script(base, releases))
        if units:
            listed = " ".join(shlex.quote(unit) for _, unit in units)
            # One value per unit, in order (0 when it runs nothing); blank lines are dropped.
            parts.append(f"set -- $(systemctl show -p MainPID --value -- {listed} 2>/dev/null)")
            parts += [_running_script(name, f"{base}/{name}") for name, _ in units]
        return "; ".join(parts) + "; true"

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        installed: dict[str, set[str]] = {}
        current: dict[str, str] = {}
        running: dict[str, list[str]] = {}
        names: list[str] = []
        for line in output:
            if line.startswith(_COMPONENTS):
                names = line.removeprefix(_COMPONENTS).split()
            elif line.startswith(_CURRENT):
                name, _, target = line.removeprefix(_CURRENT).partition(" ")
                current[name] = target
            elif line.startswith(_INSTALLED):
                name, _, version = line.removeprefix(_INSTALLED).partition("/")
                installed.setdefault(name, set()).add(version)
            elif line.startswith(_RUNNING):
                name, _, said = line.removeprefix(_RUNNING).partition(" ")
                running.setdefault(name, []).append(said)
        return {
            name: {
                "installed": sorted(installed.get(name, ())),
                "current": current.get(name),
                "running": running_version(running.get(name, [])),
            }
            for name in names
        }


def running_version(lines: list[str]) -> str | None:
    """The first version number in a binary's ``--version`` output, without a leading "v"."""
    for line in lines:
        match = _VERSION.search(line)
        if match:
            return match.group(1)
    return None


class FlannelLease(FactBase):
    """The subnet flannel leased to this host, from ``/run/flannel/subnet.env``.

    Returns ``{"network": "10.244.0.0/16", "subnet": "10.244.3.1/24", "mtu": 1450,
    "ipmasq": True}`` (a key is None when the file lacks it), or None when there is no lease.
    """

    def command(self, path: str = FLANNEL_SUBNET_ENV) -> str:
        quoted = shlex.quote(path)
        return f"test ! -e {quoted} || cat {quoted}"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        values = {}
        for line in output:
            key, sep, value = line.strip().partition("=")
            if sep:
                values[key] = value.strip()
        if not values:
            return None
        mtu = values.get("FLANNEL_MTU", "")
        ipmasq = values.get("FLANNEL_IPMASQ")
        return {
            "network": values.get("FLANNEL_NETWORK"),
            "subnet": values.get("FLANNEL_SUBNET"),
            "mtu": int(mtu) if mtu.isdigit() else None,
            "ipmasq": None if ipmasq is None else ipmasq == "true",
        }
