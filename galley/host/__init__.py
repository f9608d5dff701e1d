"""The host kit: what every component deploy uses on a host (releases, certificates,
durable restarts, SSH tuning, phase joins)."""
