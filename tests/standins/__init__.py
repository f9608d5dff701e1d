"""Stand-ins: local fakes of real services, for tests and the lab only (never production code)."""
