"""A bug in galley's own code during a deploy reads as one line per host, with the traceback
once, in a log file whose path is printed.

pyinfra logs the whole traceback of an exception raised in an operation's Python callback
for every host it happens on (then one line, ``Unexpected error in Python callback: <class>:
<message>``): the same bug on 30 hosts was 30 tracebacks. `install` puts a filter on
pyinfra's logger that writes each distinct traceback to the run's log file instead, and says
where once. `bug` turns an exception raised while preparing into the one-line refusal pyinfra
prints (`galley.problems.PreflightError`), with its traceback in the same file.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path

from galley.problems import PreflightError

_TRACEBACK = "Traceback (most recent call last):"


def log_dir() -> Path:
    """Where the log files go: ``$XDG_STATE_HOME/galley/logs`` (``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
    return Path(base).expanduser() / "galley" / "logs"


class TracebackLog(logging.Filter):
    """Keeps tracebacks out of the terminal: each distinct one goes to ``path`` (created on
    the first), and the first tells the operator where to find them."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def keep(self, text: str) -> bool:
        """Append ``text`` unless it is there already; whether it is the file's first."""
        with self.lock:
            if text in self.seen:
                return False
            first = not self.seen
            self.seen.add(text)
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.path.open("a") as log:
                log.write(text.rstrip("\n") + "\n\n")
        return first

    def filter(self, record: logging.LogRecord) -> bool:
        """Let every record through but tracebacks, which go to the file."""
        message = record.getMessage()
        if not message.startswith(_TRACEBACK):
            return True
        if self.keep(message):
            print(
                f"galley: a bug in galley's own code: the traceback is in {self.path} "
                "(one line per host below)",
                file=sys.stderr,
                flush=True,
            )
        return False


_installed: TracebackLog | None = None


def install() -> TracebackLog:
    """Filter pyinfra's tracebacks into this run's log file (once per process)."""
    global _installed
    if _installed is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        _installed = TracebackLog(log_dir() / f"deploy-{stamp}-{os.getpid()}.log")
        logging.getLogger("pyinfra").addFilter(_installed)
    return _installed


def bug(where: str, exc: Exception) -> PreflightError:
    """The one-line refusal for ``exc``, a bug met while preparing ``where``; its traceback
    goes to the run's log file."""
    log = install()
    log.keep("".join(traceback.format_exception(exc)))
    return PreflightError(
        f"{where}: a bug in galley while preparing: {type(exc).__name__}: {exc} (traceback in "
        f"{log.path}); nothing was changed"
    )
