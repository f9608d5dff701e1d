"""galley.tracebacks: a bug in galley's code during a deploy is one line per host, with the
traceback once in a log file whose path is printed (through the real pyinfra CLI on @local)."""

from __future__ import annotations

import logging

from galley import tracebacks
from tests.pyinfra_local import run_local

DEPLOY = """
from pyinfra.operations import python

from galley import tracebacks

tracebacks.install()


def sign():
    raise ValueError("general_names must be a non-empty list")


python.call(name="Sign a certificate", function=sign)
"""


def test_a_callback_bug_is_one_line_and_its_traceback_goes_to_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    done = run_local(tmp_path, DEPLOY, "-y")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output
    # pyinfra's own line: the error's class and message.
    line = "Unexpected error in Python callback: ValueError('general_names must be a non-empty"
    assert output.count(line) == 1
    (log,) = (tmp_path / "state" / "galley" / "logs").iterdir()
    assert f"galley: a bug in galley's own code: the traceback is in {log} " in output
    text = log.read_text()
    assert text.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("general_names must be a non-empty list")' in text


def test_the_same_traceback_from_many_hosts_is_kept_once(tmp_path, capsys):
    log = tracebacks.TracebackLog(tmp_path / "deploy.log")
    record = logging.LogRecord(
        "pyinfra", logging.WARNING, "", 0, "Traceback (most recent call last):\n  boom", None, None
    )
    other = logging.LogRecord(
        "pyinfra", logging.WARNING, "", 0, "[lab-worker-1] Unexpected error", None, None
    )
    assert [log.filter(record) for _ in range(30)] == [False] * 30
    assert log.filter(other)
    assert log.path.read_text().count("Traceback") == 1
    assert capsys.readouterr().err.count("the traceback is in") == 1


def test_a_bug_while_preparing_is_a_one_line_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(tracebacks, "_installed", None)
    try:
        {}["cluster_name"]
    except KeyError as exc:
        refusal = tracebacks.bug("lab-etcd-1", exc)
    message = str(refusal)
    assert message.startswith(
        "lab-etcd-1: a bug in galley while preparing: KeyError: 'cluster_name'"
    )
    assert message.endswith("; nothing was changed") and "\n" not in message
    assert "KeyError" in tracebacks._installed.path.read_text()
    logging.getLogger("pyinfra").removeFilter(tracebacks._installed)
