"""galley.facts.files.PathStates and galley.facts.managed.ManagedState: their commands run by
sh on real files (a space in a name, a directory, a symlink, a missing path), parsed as a
deploy reads them."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from galley.facts.files import PathStates
from galley.facts.firewall import HostFirewall
from galley.facts.managed import ManagedState, fact_name
from galley.facts.system import OsInfo, mtime_us


def _run(fact, **kwargs) -> dict:
    run = subprocess.run(
        ["sh", "-c", str(fact.command(**kwargs))], capture_output=True, text=True, check=True
    )
    return fact.process(run.stdout.splitlines())


def _owner() -> tuple[str, str]:
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    return user, group


def test_one_round_trip_reads_kind_mode_owner_digest_and_link_target(tmp_path: Path):
    config = tmp_path / "a config.yaml"
    config.write_text("x: 1\n")
    config.chmod(0o640)
    os.utime(config, (1_700_000_000.25, 1_700_000_000.25))
    unhashed = tmp_path / "unhashed"
    unhashed.write_text("y\n")
    link = tmp_path / "current"
    link.symlink_to("a config.yaml")
    missing = tmp_path / "missing"
    paths = [str(p) for p in (config, unhashed, link, tmp_path, missing)]
    found = _run(PathStates(), paths=paths, digests=[str(config), str(tmp_path)])
    user, group = _owner()
    assert set(found) == {str(config), str(unhashed), str(link), str(tmp_path)}  # missing: absent
    assert found[str(config)] | {"mtime": None, "followed_mtime": None} == {
        "kind": "file",
        "mode": "640",
        "user": user,
        "group": group,
        "target": None,
        "mtime": None,
        "followed_mtime": None,
        "sha256": hashlib.sha256(b"x: 1\n").hexdigest(),
    }
    assert mtime_us(found[str(config)]["mtime"]) == 1_700_000_000_250_000
    assert found[str(unhashed)]["sha256"] is None  # not asked for
    assert found[str(tmp_path)]["kind"] == "directory"
    assert found[str(tmp_path)]["sha256"] is None  # a directory has no digest
    assert found[str(link)]["kind"] == "link"
    assert found[str(link)]["target"] == "a config.yaml"
    # What a link points at counts for restarts: its target's modification time.
    assert mtime_us(found[str(link)]["followed_mtime"]) == 1_700_000_000_250_000


def test_no_paths_reads_nothing():
    assert _run(PathStates(), paths=[]) == {}


def test_managed_state_splits_paths_units_and_keys(tmp_path: Path):
    key = tmp_path / "member.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(key)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    found = _run(
        ManagedState(),
        paths=[str(key)],
        digests=[],
        units=[],
        keys=[str(key), str(tmp_path / "absent.key")],
        certs=[str(tmp_path / "absent.crt")],
        facts=[fact_name(OsInfo), fact_name(HostFirewall)],
    )
    assert found["paths"][str(key)]["mode"] == "600"
    # A component's facts, read in the same command: this machine's OS, and no firewall kept.
    assert found["facts"][fact_name(OsInfo)] == _run(OsInfo())
    assert found["facts"][fact_name(HostFirewall)]["kept"] is None
    assert found["units"] == {}
    assert found["tls"]["keys"][str(key)]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert found["tls"]["keys"][str(tmp_path / "absent.key")] is None
    assert found["tls"]["certs"] == {str(tmp_path / "absent.crt"): None}
