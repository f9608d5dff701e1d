"""galley.facts.together: several facts' commands run by sh in one go, each output processed
by its own fact (as `galley report` reads a host)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from galley.facts.files import PathStates
from galley.facts.fleet import FlannelLease
from galley.facts.system import OsInfo
from galley.facts.together import FactError, command_of, process, read_together


def _run(facts) -> dict:
    done = subprocess.run(["sh", "-c", command_of(facts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return process(facts, done.stdout.splitlines())


class Failing(OsInfo):
    def command(self) -> str:
        return "echo partial; exit 3"


class Unparsable(OsInfo):
    def command(self) -> str:
        return "printf 'no newline at the end'"

    def process(self, output: list[str]) -> dict:
        raise ValueError(f"cannot read {output!r}")


def test_each_fact_gets_its_own_output_default_or_error(tmp_path: Path):
    lease = tmp_path / "subnet.env"
    lease.write_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n")
    facts = {
        "lease": (FlannelLease, {"path": str(lease)}),
        "no lease": (FlannelLease, {"path": str(tmp_path / "missing.env")}),
        "paths": (PathStates, {"paths": [str(lease)], "digests": [str(lease)]}),
        "failing": (Failing, {}),
        "unparsable": (Unparsable, {}),
    }
    found = _run(facts)
    assert found["lease"]["subnet"] == "10.244.3.1/24"
    assert found["no lease"] is None  # nothing printed: the fact's default
    assert found["paths"][str(lease)]["kind"] == "file"
    assert isinstance(found["failing"], FactError)
    assert "exited 3" in str(found["failing"])
    # Output without a final newline stays its own; the error names what did not parse.
    assert isinstance(found["unparsable"], FactError)
    assert "no newline at the end" in str(found["unparsable"])


def test_a_fact_whose_section_never_came_is_an_error():
    facts = {"os": (OsInfo, {})}
    assert isinstance(process(facts, [])["os"], FactError)


class _StrictHost:
    """Runs commands with sh and decodes their output as strict UTF-8, as pyinfra's SSH
    connector does (paramiko raises on an invalid byte)."""

    def run_shell_command(self, command: str):
        done = subprocess.run(["sh", "-c", command], capture_output=True, check=False)
        lines = done.stdout.decode("utf-8").splitlines()
        return done.returncode == 0, SimpleNamespace(stdout_lines=lines, stderr="")


def test_a_stray_byte_in_one_file_costs_no_fact(tmp_path: Path):
    lease = tmp_path / "subnet.env"
    lease.write_bytes(
        b"FLANNEL_NETWORK=10.244.0.0/16\n# \xff\xfe stray\nFLANNEL_SUBNET=10.244.3.1/24\n"
    )
    facts = {"lease": (FlannelLease, {"path": str(lease)}), "os": (OsInfo, {})}
    with pytest.raises(UnicodeDecodeError):  # what reading it raw would do
        _StrictHost().run_shell_command(f"cat {lease}")
    found = read_together(_StrictHost(), facts)
    assert found["lease"]["subnet"] == "10.244.3.1/24"
    assert found["os"]["kernel"] == os.uname().release
