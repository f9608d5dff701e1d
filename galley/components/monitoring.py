"""monitoring: Prometheus and Alertmanager on the ``monitoring`` hosts.

Prometheus scrapes every host of the inventory: its node exporter (host metrics and galley's
host state, `galley.components.node_exporter`), each etcd member's metrics listener (TLS, with
a client identity of its own that Vault signs and the host renews like any other), and each
worker's API proxy (HAProxy's own exporter). The targets are files Prometheus watches
(file-based discovery): a host added to the inventory is scraped after the next deploy with no
restart. The alert rules galley ships (`templates/monitoring/alerts.yml.j2`, each with a
runbook line) go to Alertmanager on the same host, which hands them to the receiver group data
configures. A change to the configuration or the rules is checked with ``promtool`` and then
reloaded (a mistake leaves the running configuration in place and fails the deploy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.api_proxy import METRICS_PORT as API_PROXY_METRICS_PORT
from galley.components.engine import render_text, write
from galley.components.etcd import etcd_client_cert
from galley.components.kubernetes import needs_proxy
from galley.components.model import (
    MONITORING,
    OPERATORS,
    Component,
    Config,
    Configured,
    Directory,
    Port,
    Unit,
    github_artifact,
)
from galley.components.node_exporter import PORT as NODE_EXPORTER_PORT
from galley.settings import SPAN, Kind, Setting

CONFIG_DIR = "/etc/galley/prometheus"
CONFIG = f"{CONFIG_DIR}/prometheus.yml"
RULES = f"{CONFIG_DIR}/alerts.yml"
TARGETS_DIR = f"{CONFIG_DIR}/targets"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/prometheus"
ALERTMANAGER_DIR = "/etc/galley/alertmanager"
ALERTMANAGER_CONFIG = f"{ALERTMANAGER_DIR}/alertmanager.yml"
ALERTMANAGER_DATA = "/var/lib/alertmanager"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
# The identity Prometheus scrapes etcd's metrics with: its own role, signed for exactly it.
ETCD_METRICS_CLIENT = "etcd-metrics-reader"

SCRAPE_INTERVAL = Setting("monitoring_scrape_interval", "30s", SPAN)
# How long a condition holds before its alert fires (the rules' ``for``).
ALERT_AFTER = Setting("monitoring_alert_after", "2m", SPAN)
RETENTION = Setting("monitoring_retention", "15d", SPAN)
RECEIVER = Setting(
    "alertmanager_receiver",
    None,
    Kind(
        "an Alertmanager receiver (a dict such as {'webhook_configs': [{'url': ...}]})",
        lambda value: isinstance(value, dict),
    ),
)
RECEIVER_NAME = "galley"


def prometheus_duration(span: object) -> str:
    """A systemd time span as Prometheus writes a duration (``15min`` -> ``15m``)."""
    text = str(span)
    for unit, short in (("min", "m"), ("sec", "s")):
        if text.endswith(unit):
            return text.removesuffix(unit) + short
    return text if text[-1:].isalpha() else f"{text}s"


def scrape_targets(host: Host) -> dict[str, list[dict[str, Any]]]:
    """Each scrape job's targets (file-based discovery's format) from ``host``'s inventory:
    every host's node exporter, every etcd member's metrics, every API proxy's exporter."""
    inventory = host.inventory
    jobs: dict[str, list[dict[str, Any]]] = {"node": [], "etcd": [], "api-proxy": []}

    def add(job: str, target: Host, port: int) -> None:
        labels = {"host": target.name, "groups": ",".join(sorted(target.groups))}
        jobs[job].append({"targets": [f"{target.data.private_ip}:{port}"], "labels": labels})

    for target in sorted(inventory, key=lambda h: h.name):
        add("node", target, NODE_EXPORTER_PORT)
        if "etcd" in target.groups:
            add("etcd", target, int(target.data.etcd_metrics_port))
        if "workers" in target.groups and needs_proxy(target):
            add("api-proxy", target, API_PROXY_METRICS_PORT)
    return jobs


def target_file(job: str) -> str:
    """Where the targets of scrape job ``job`` live."""
    return f"{TARGETS_DIR}/{job}.json"


TARGETS = tuple(Config(target_file(job)) for job in ("node", "etcd", "api-proxy"))


def alert_rules(alert_after: str) -> str:
    """The shipped alert rules, conditions held for ``alert_after`` (a Prometheus duration)."""
    return render_text(PROMETHEUS.config(RULES), alert_after=alert_after)


def prometheus_files(host: Host) -> dict[str, str]:
    """Prometheus' configuration, rules and target files for ``host``: path -> text."""
    data = host.data
    files = {
        CONFIG: render_text(
            PROMETHEUS.config(CONFIG),
            cluster_name=data.cluster_name,
            scrape_interval=prometheus_duration(SCRAPE_INTERVAL.of(data)),
            listen=f"{data.private_ip}:{PROMETHEUS_PORT}",
            alertmanager=f"{data.private_ip}:{ALERTMANAGER_PORT}",
            rules=RULES,
            etcd_client=PROMETHEUS.certs_by_stem(host)["etcd-metrics"],
            target_file=target_file,
        ),
        RULES: alert_rules(prometheus_duration(ALERT_AFTER.of(data))),
    }
    for job, targets in scrape_targets(host).items():
        files[target_file(job)] = json.dumps(targets, indent=2) + "\n"
    return files


def _configure_prometheus(host: Host, context: Mapping[str, Any]) -> Configured:
    written = {
        path: write(PROMETHEUS.config(path), text) for path, text in prometheus_files(host).items()
    }
    variables = {
        "listen": f"{host.data.private_ip}:{PROMETHEUS_PORT}",
        "config_file": CONFIG,
        "data_dir": DATA_DIR,
        "retention": prometheus_duration(RETENTION.of(host.data)),
    }
    return Configured(written, variables)


PROMETHEUS = Component(
    name="prometheus",
    group=MONITORING,
    phase="monitoring",
    artifacts=(
        github_artifact(
            "prometheus",
            "prometheus/prometheus",
            "prometheus-{version}.linux-{arch}.tar.gz",
            "sha256sums.txt",
            ("prometheus", "promtool"),
        ),
    ),
    certs=(
        etcd_client_cert(
            "etcd-metrics",
            ETCD_METRICS_CLIENT,
            PKI_DIR,
            f"{PKI_DIR}/etcd-ca.crt",
            owner="prometheus",
            # Prometheus reads its client certificate again for new connections.
            reloaded=True,
        ),
    ),
    configs=(
        Config(CONFIG, "monitoring/prometheus.yml.j2", reload=True),
        Config(RULES, "monitoring/alerts.yml.j2", reload=True),
        # Prometheus watches its target files: a change needs neither reload nor restart.
        *(Config(target.path, watched=False) for target in TARGETS),
    ),
    unit=Unit("prometheus", "monitoring/prometheus.service.j2"),
    directories=(
        Directory("/etc/galley"),
        Directory(CONFIG_DIR),
        Directory(TARGETS_DIR),
        Directory(PKI_DIR, "700", "prometheus", "prometheus"),
        Directory(DATA_DIR, "700", "prometheus", "prometheus"),
    ),
    user="prometheus",
    user_home=DATA_DIR,
    ports=(Port(PROMETHEUS_PORT, (OPERATORS,)),),
    settings=(SCRAPE_INTERVAL, ALERT_AFTER, RETENTION),
    configure=_configure_prometheus,
)


def alertmanager_config(host: Host) -> str:
    """Alertmanager's configuration for ``host``: every alert to the receiver group data
    configures (named ``galley``; none: alerts are kept, sent nowhere)."""
    receiver = {**(RECEIVER.of(host.data) or {}), "name": RECEIVER_NAME}
    return render_text(
        ALERTMANAGER.config(ALERTMANAGER_CONFIG),
        cluster_name=host.data.cluster_name,
        receiver=json.dumps(receiver),
    )


def _configure_alertmanager(host: Host, context: Mapping[str, Any]) -> Configured:
    config = ALERTMANAGER.config(ALERTMANAGER_CONFIG)
    written = {ALERTMANAGER_CONFIG: write(config, alertmanager_config(host))}
    variables = {
        "listen": f"{host.data.private_ip}:{ALERTMANAGER_PORT}",
        "config_file": ALERTMANAGER_CONFIG,
        "data_dir": ALERTMANAGER_DATA,
    }
    return Configured(written, variables)


ALERTMANAGER = Component(
    name="alertmanager",
    group=MONITORING,
    phase="monitoring",
    artifacts=(
        github_artifact(
            "alertmanager",
            "prometheus/alertmanager",
            "alertmanager-{version}.linux-{arch}.tar.gz",
            "sha256sums.txt",
            ("alertmanager", "amtool"),
        ),
    ),
    # The receiver may hold credentials (a webhook's URL, a password): only its user reads it.
    configs=(
        Config(
            ALERTMANAGER_CONFIG,
            "monitoring/alertmanager.yml.j2",
            mode="640",
            group="alertmanager",
            reload=True,
        ),
    ),
    unit=Unit("alertmanager", "monitoring/alertmanager.service.j2"),
    directories=(
        Directory("/etc/galley"),
        Directory(ALERTMANAGER_DIR),
        Directory(ALERTMANAGER_DATA, "700", "alertmanager", "alertmanager"),
    ),
    user="alertmanager",
    user_home=ALERTMANAGER_DATA,
    ports=(Port(ALERTMANAGER_PORT, (OPERATORS,)),),
    settings=(RECEIVER,),
    configure=_configure_alertmanager,
)
