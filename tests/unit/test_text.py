"""What hosts and APIs say is printed without control characters."""

from __future__ import annotations

from datetime import UTC, datetime

from galley.report import analyse, render
from galley.text import clean


def test_escape_sequences_and_carriage_returns_are_neutralised():
    assert clean("ok\x1b[2J\x1b]0;pwned\x07\rdone\n") == "ok?[2J?]0;pwned??done"
    assert clean("lab-etcd-1") == "lab-etcd-1"


def test_the_report_never_prints_what_a_host_sends_raw():
    hostile = "Debian\x1b[31m\x1b[2J"
    fleet = {
        "lab-etcd-1": {
            "groups": ["etcd"],
            "error": None,
            "os": {"pretty_name": hostile, "kernel": "6.1"},
            "etcd": {"healthy": False, "error": "dial tcp\x1b[2K: refused", "leader": "a"},
        }
    }
    text = render(analyse(fleet, days=14, now=datetime.now(UTC)), color=False)
    assert "\x1b" not in text
    assert "Debian?[31m?[2J" in text and "dial tcp?[2K: refused" in text
