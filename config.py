"""pyinfra configuration for galley's deploys (read from the repository root)."""

# A cluster is one unit: if any host fails (unreachable, bad checksum, failed restart), stop
# everything rather than carry on with the rest of the fleet.
FAIL_PERCENT = 0
CONNECT_TIMEOUT = 10
REQUIRE_PYINFRA_VERSION = ">=3.10,<4"
