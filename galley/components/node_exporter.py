"""node-exporter: Prometheus' node exporter on every host, on its private address only.

Besides the host's own metrics it serves galley's host state through its textfile collector
(`METRICS_DIR`): the deploy writes the version of each component it installed there
(``galley-components.prom``), the certificate renewal each certificate's validity and the
renewal's outcome, an etcd member's snapshot job its newest snapshot. Each writer replaces its
file by rename, so a scrape never reads half of one. Only the ``monitoring`` hosts may connect
(`galley.components.monitoring` scrapes it). It runs as a dynamic user with a read-only view
of the host: it needs no privilege to read /proc, /sys and the textfile directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.model import (
    Component,
    Config,
    Configured,
    Directory,
    Metrics,
    Unit,
    github_artifact,
)

# The textfile collector's directory: galley's host state as metrics, one file per writer.
METRICS_DIR = "/var/lib/galley/metrics"
PORT = 9100
COMPONENTS_METRICS = f"{METRICS_DIR}/galley-components.prom"
CONFIG = Config(COMPONENTS_METRICS, "node-exporter/galley-components.prom.j2", watched=False)
ARTIFACT = github_artifact(
    "node_exporter",
    "prometheus/node_exporter",
    "node_exporter-{version}.linux-{arch}.tar.gz",
    "sha256sums.txt",
    ("node_exporter",),
)


def installed_releases(host: Host, components: Sequence[Component]) -> list[dict[str, str]]:
    """Each release ``components`` install on ``host``: component, release and version."""
    return [
        {"component": c.name, "release": a.release, "version": str(host.data.get(a.version_field))}
        for c in components
        for a in c.artifacts
    ]


def node_exporter(running_on: Callable[[Host], Sequence[Component]]) -> Component:
    """The component; ``running_on(host)`` lists what a host runs (the registry's, which
    holds this component too)."""

    def configure(host: Host, context: Mapping[str, Any]) -> Configured:
        releases = installed_releases(host, running_on(host))
        written = {COMPONENTS_METRICS: render(CONFIG, releases=releases)}
        variables = {"listen": f"{host.data.private_ip}:{PORT}", "textfile_dir": METRICS_DIR}
        return Configured(written, variables)

    return Component(
        name="node-exporter",
        group=None,
        phase="",
        artifacts=(ARTIFACT,),
        # Read at every scrape: a new version list needs no restart.
        configs=(CONFIG,),
        unit=Unit("node-exporter", "node-exporter/node-exporter.service.j2"),
        directories=(Directory("/var/lib/galley"), Directory(METRICS_DIR)),
        metrics=(Metrics("node", PORT),),
        configure=configure,
    )
