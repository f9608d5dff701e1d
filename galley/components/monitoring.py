"""monitoring: Prometheus and Alertmanager on the ``monitoring`` hosts.

Prometheus scrapes what every component declares it serves (`Metrics`) on every host of the
inventory that runs it: the node exporter (host metrics and galley's host state), etcd's
metrics (TLS, with a client identity of its own that Vault signs and the host renews like any
other), the API proxies' exporter, and the apiservers', controller managers', schedulers' and
kubelets' own metrics (with a Kubernetes identity that RBAC lets read metrics and nothing
else). The targets are files Prometheus watches (file-based discovery): a host added to the
inventory is scraped after the next deploy of the monitoring hosts, with no restart. The
alert rules galley ships (`templates/monitoring/alerts.yml.j2`, each with a runbook line) go
to Alertmanager on the same host, which hands them to the receiver group data configures. A
change to the configuration or the rules is checked with ``promtool`` and then reloaded (a
mistake leaves the running configuration in place and fails the deploy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render_text, write
from galley.components.etcd import etcd_client_cert
from galley.components.model import (
    MONITORING,
    OPERATORS,
    Cert,
    Component,
    Config,
    Configured,
    Directory,
    Port,
    Unit,
    cluster_role,
    cluster_role_binding,
    github_artifact,
)
from galley.settings import SPAN, Kind, Setting
from galley.vault.pki import Identity, RoleSpec

CONFIG_DIR = "/etc/galley/prometheus"
CONFIG = Config(f"{CONFIG_DIR}/prometheus.yml", "monitoring/prometheus.yml.j2", reload=True)
RULES = Config(f"{CONFIG_DIR}/alerts.yml", "monitoring/alerts.yml.j2", reload=True)
TARGETS_DIR = f"{CONFIG_DIR}/targets"
PKI_DIR = f"{CONFIG_DIR}/pki"
DATA_DIR = "/var/lib/prometheus"
ALERTMANAGER_DIR = "/etc/galley/alertmanager"
# The receiver may hold credentials (a webhook's URL, a password): only its user reads it.
ALERTMANAGER_CONFIG = Config(
    f"{ALERTMANAGER_DIR}/alertmanager.yml",
    "monitoring/alertmanager.yml.j2",
    mode="640",
    group="alertmanager",
    reload=True,
)
ALERTMANAGER_DATA = "/var/lib/alertmanager"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
# The identities Prometheus presents to metrics behind TLS, by the mount that signs them: each
# its own role, signed for exactly its name. RBAC lets the Kubernetes one read metrics only.
KUBE_METRICS_USER = "galley:metrics-reader"
CLIENTS = {
    "etcd": etcd_client_cert(
        "etcd-metrics",
        "etcd-metrics-reader",
        PKI_DIR,
        f"{PKI_DIR}/etcd-ca.crt",
        owner="prometheus",
        # Prometheus reads its client certificates again for new connections.
        reloaded=True,
    ),
    "k8s": Cert(
        "kube-metrics",
        PKI_DIR,
        "k8s",
        RoleSpec("kube-metrics-reader", "k8s", enforce_hostnames=False),
        lambda host: Identity(KUBE_METRICS_USER),
        f"{PKI_DIR}/kubernetes-ca.crt",
        "prometheus",
        "prometheus",
        reloaded=True,
    ),
}
RBAC = (
    cluster_role(
        KUBE_METRICS_USER,
        [
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            # A kubelet's /metrics.
            {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        ],
    ),
    cluster_role_binding(KUBE_METRICS_USER, KUBE_METRICS_USER, "User", KUBE_METRICS_USER),
)

SCRAPE_INTERVAL = Setting("monitoring_scrape_interval", "30s", SPAN)
# How often the alert rules are evaluated.
EVALUATION_INTERVAL = Setting("monitoring_evaluation_interval", "30s", SPAN)
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


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: its name, the mount of the identity its TLS needs (None: plain HTTP),
    and its targets in file-based discovery's format."""

    name: str
    mount: str | None
    targets: list[dict[str, Any]]

    @property
    def target_file(self) -> str:
        """Where Prometheus reads its targets."""
        return target_file(self.name)


def target_file(job: str) -> str:
    """Where Prometheus reads the targets of scrape job ``job``."""
    return f"{TARGETS_DIR}/{job}.json"


def scrape_jobs(
    hosts: Iterable[Host],
    components: Sequence[Component],
    running_on: Callable[[Host], Sequence[Component]],
) -> list[ScrapeJob]:
    """Every job the ``components`` declare metrics for, with the ``hosts`` that run them
    (each with its name and groups as labels); a job no host runs has no targets."""
    mounts = {metrics.job: metrics.mount for c in components for metrics in c.metrics}
    targets: dict[str, list[dict[str, Any]]] = {job: [] for job in mounts}
    for host in sorted(hosts, key=lambda h: h.name):
        labels = {"host": host.name, "groups": ",".join(sorted(host.groups))}
        for component in running_on(host):
            for metrics in component.metrics:
                if metrics.when(host):
                    address = f"{host.data.private_ip}:{metrics.on(host)}"
                    targets[metrics.job].append({"targets": [address], "labels": labels})
    return [ScrapeJob(job, mount, targets[job]) for job, mount in mounts.items()]


def prometheus_duration(span: object) -> str:
    """A systemd time span as Prometheus writes a duration (``15min`` -> ``15m``)."""
    text = str(span)
    for unit, short in (("min", "m"), ("sec", "s")):
        if text.endswith(unit):
            return text.removesuffix(unit) + short
    return text if text[-1:].isalpha() else f"{text}s"


def alert_rules(alert_after: str) -> str:
    """The shipped alert rules, conditions held for ``alert_after`` (a Prometheus duration)."""
    return render_text(RULES, alert_after=alert_after)


def prometheus_files(host: Host, jobs: Sequence[ScrapeJob]) -> dict[str, str]:
    """Prometheus' configuration, rules and target files on ``host``: path -> text."""
    data = host.data
    files = {
        CONFIG.path: render_text(
            CONFIG,
            cluster_name=data.cluster_name,
            scrape_interval=prometheus_duration(SCRAPE_INTERVAL.of(data)),
            evaluation_interval=prometheus_duration(EVALUATION_INTERVAL.of(data)),
            listen=f"{data.private_ip}:{PROMETHEUS_PORT}",
            alertmanager=f"{data.private_ip}:{ALERTMANAGER_PORT}",
            rules=RULES.path,
            jobs=jobs,
            clients=CLIENTS,
        ),
        RULES.path: alert_rules(prometheus_duration(ALERT_AFTER.of(data))),
    }
    for job in jobs:
        files[job.target_file] = json.dumps(job.targets, indent=2) + "\n"
    return files


def prometheus(scrape_jobs_of: Callable[[Host], Sequence[ScrapeJob]]) -> Component:
    """The Prometheus component; ``scrape_jobs_of(host)`` gives the jobs of ``host``'s
    inventory (`scrape_jobs` over the registry, which holds this component too)."""

    def configure(host: Host, context: Mapping[str, Any]) -> Configured:
        declared = {config.path: config for config in (CONFIG, RULES)}
        # The target files are not declared (none is watched): Prometheus reads them by itself.
        written = {
            path: write(declared.get(path, Config(path)), text)
            for path, text in prometheus_files(host, scrape_jobs_of(host)).items()
        }
        variables = {
            "listen": f"{host.data.private_ip}:{PROMETHEUS_PORT}",
            "config_file": CONFIG.path,
            "data_dir": DATA_DIR,
            "retention": prometheus_duration(RETENTION.of(host.data)),
        }
        return Configured(written, variables)

    return Component(
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
        certs=tuple(CLIENTS.values()),
        rbac=RBAC,
        configs=(CONFIG, RULES),
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
        settings=(SCRAPE_INTERVAL, EVALUATION_INTERVAL, ALERT_AFTER, RETENTION),
        configure=configure,
    )


def alertmanager_config(host: Host) -> str:
    """Alertmanager's configuration for ``host``: every alert to the receiver group data
    configures (named ``galley``; none: alerts are kept, sent nowhere)."""
    receiver = {**(RECEIVER.of(host.data) or {}), "name": RECEIVER_NAME}
    return render_text(
        ALERTMANAGER_CONFIG, cluster_name=host.data.cluster_name, receiver=json.dumps(receiver)
    )


def _configure_alertmanager(host: Host, context: Mapping[str, Any]) -> Configured:
    written = {ALERTMANAGER_CONFIG.path: write(ALERTMANAGER_CONFIG, alertmanager_config(host))}
    variables = {
        "listen": f"{host.data.private_ip}:{ALERTMANAGER_PORT}",
        "config_file": ALERTMANAGER_CONFIG.path,
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
    configs=(ALERTMANAGER_CONFIG,),
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
