"""Monitoring hosts: Prometheus and Alertmanager (galley/components/monitoring.py).

Their releases' sha256 come from `galley checksums fetch`, or the catalogue. Also declared
there, with their defaults: monitoring_scrape_interval (30s), monitoring_alert_after (2m: how
long a condition holds before its alert fires), monitoring_retention (15d) and
alertmanager_receiver (None: alerts are kept in Alertmanager, sent nowhere), e.g.
alertmanager_receiver = {"webhook_configs": [{"url": "https://alerts.example.com/hook"}]}.
"""

prometheus_version = "3.5.3"
alertmanager_version = "0.28.1"
