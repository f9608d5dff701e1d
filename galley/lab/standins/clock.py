"""Time as the Kubernetes API writes it (lab/test only; stdlib only)."""

from __future__ import annotations

import datetime


def now() -> datetime.datetime:
    """The current time, in UTC."""
    return datetime.datetime.now(datetime.UTC)


def timestamp(when: datetime.datetime | None = None) -> str:
    """RFC 3339 with second precision, as Kubernetes writes metav1.Time."""
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")
