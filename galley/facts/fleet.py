"""Fleet facts operators ask for that the other fact modules do not cover: which version of
each component is installed, current and actually running, and the host's flannel lease."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

from pyinfra.api import FactBase

from galley.facts.release import DEFAULT_PREFIX, InstalledReleases

FLANNEL_SUBNET_ENV = "/run/flannel/subnet.env"
_COMPONENT_HEADER = "##galley-component "
_RUNNING = "##galley-running "
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# "etcd Version: 3.5.30", "Kubernetes v1.30.2", "v0.25.1": the first dotted version printed.
# Build metadata ("+unknown", "+ds1") is not part of the version (semver precedence).
_VERSION = re.compile(r"\bv?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?:\+[0-9A-Za-z.-]+)?")


def _running_script(unit: str, base: str) -> str:
    """Print the version of the program the unit's main process runs, prefixed.

    ``/proc/<pid>/exe`` is the file the process was started from, even after an upgrade
    replaced or removed it, so this is the running version, not the installed one. A program
    run by a Python interpreter (the lab's stand-ins, which start from their resolved,
    versioned path) is named by its script, the first argument of its command line. A
    program galley installed runs from ``<base>/<version>/``: the version is read from that
    path, without running anything (on a busy host a ``--version`` of every component is
    most of a report's time); any other program is asked with ``--version``.
    """
    unit_quoted, base_quoted = shlex.quote(unit), shlex.quote(base.rstrip("/"))
    return (
        f"pid=$(systemctl show -p MainPID --value -- {unit_quoted} 2>/dev/null); "
        'if [ -n "$pid" ] && [ "$pid" != 0 ]; then exe="/proc/$pid/exe"; '
        'program=$(readlink "$exe"); '
        'case "$program" in */python*) '
        """program=$(tr '\\0' '\\n' < "/proc/$pid/cmdline" | sed -n 2p); """
        "python=1;; *) python=;; esac; "
        f"base={base_quoted}; "
        'case "$program" in "$base"/*/*) version=${program#"$base"/}; '
        f'echo "{_RUNNING}v${{version%%/*}}";; '
        '*) if [ -n "$python" ]; then "$exe" "$program" --version; else "$exe" --version; fi '
        f'2>&1 | head -n 3 | sed "s/^/{_RUNNING}/";; esac; fi'
    )


class ComponentVersions(FactBase):
    """Installed, current and running version of each component, in one round trip.

    ``components`` are galley release names, each optionally ``release:unit`` when its
    systemd unit has another name (``flannel:flanneld``), or ``release:`` for a release no
    unit runs (``cni-plugins:``). Returns ``{"etcd": {"installed": ["3.5.29", "3.5.30"],
    "current": "3.5.30", "running": "3.5.30" | None}}``: ``installed``/``current`` as
    `InstalledReleases` reads them, ``running`` what the unit's main process binary reports
    (None when not running).
    """

    def command(
        self, components: str | Iterable[str] = ("etcd",), prefix: str = DEFAULT_PREFIX
    ) -> str:
        names = (components,) if isinstance(components, str) else tuple(components)
        if not names:
            raise ValueError("no components given")
        parts = []
        for entry in names:
            name, colon, unit = entry.partition(":")
            unit = unit if colon else name
            if not _COMPONENT.fullmatch(name) or (unit and not _COMPONENT.fullmatch(unit)):
                raise ValueError(f"invalid component name: {entry!r}")
            parts += [
                f"echo '{_COMPONENT_HEADER}{name}'",
                InstalledReleases().command(name, prefix),
            ]
            if unit:
                parts.append(_running_script(unit, f"{prefix.rstrip('/')}/{name}"))
        return "; ".join(parts) + "; true"

    @staticmethod
    def default() -> dict[str, dict[str, Any]]:
        return {}

    def process(self, output: list[str]) -> dict[str, dict[str, Any]]:
        sections: dict[str, list[str]] = {}
        lines: list[str] = []
        for line in output:
            if line.startswith(_COMPONENT_HEADER):
                lines = sections[line.removeprefix(_COMPONENT_HEADER)] = []
            else:
                lines.append(line)
        result = {}
        for name, section in sections.items():
            running = [line.removeprefix(_RUNNING) for line in section if line.startswith(_RUNNING)]
            releases = InstalledReleases().process(
                [line for line in section if not line.startswith(_RUNNING)]
            )
            result[name] = {
                "installed": releases["installed"],
                "current": releases["current"],
                "running": running_version(running),
            }
        return result


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
