"""The lab: real systemd droplets on one machine (systemd-nspawn), for tests and demos."""
