"""install_release/switch_release through the real pyinfra CLI (@local) against a local mirror."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from galley.lab.mirror import MirrorServer
from tests.pyinfra_local import run_local

BINARIES = ["tool", "toolctl"]


@dataclass(frozen=True)
class Published:
    url: str
    sha256: str


@dataclass
class Site:
    """A mirror on 127.0.0.1 plus a temporary prefix/bin dir to install into."""

    tmp: Path
    mirror_root: Path
    base_url: str

    @property
    def prefix(self) -> Path:
        return self.tmp / "opt"

    @property
    def bin_dir(self) -> Path:
        return self.tmp / "bin"

    @property
    def restarts(self) -> Path:
        return self.tmp / "restarts"

    def publish(self, version: str, binaries: list[str] = BINARIES) -> Published:
        """Put a tool-v<version>.tar.gz (top dir: the scripts ``binaries`` and a README) on
        the mirror."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in ["README.md", *binaries]:
                data = f"#!/bin/sh\necho {name} {version}\n".encode()
                info = tarfile.TarInfo(f"tool-v{version}/{name}")
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
        relative = f"dl.example/tool/v{version}/tool-v{version}.tar.gz"
        (self.mirror_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.mirror_root / relative).write_bytes(buffer.getvalue())
        return Published(
            f"{self.base_url}/{relative}", hashlib.sha256(buffer.getvalue()).hexdigest()
        )

    def pyinfra(self, call: str, dry: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a deploy file doing ``release = <call>`` plus a restart gated on release.changed.

        ``-y`` skips change detection, so a dry run goes without it to report planned changes.
        """
        deploy = self.tmp / "deploy.py"
        deploy.write_text(
            "from pyinfra.operations import server\n"
            "from galley.host.release import install_release, switch_release\n"
            f"release = {call}\n"
            "server.shell(name='Restart tool', "
            f"commands=['echo restart >> {self.restarts}'], _if=release.changed)\n"
        )
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinfra",
                "@local",
                str(deploy),
                "--json",
                "--dry" if dry else "-y",
            ],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def install(self, version: str, published: Published, dry: bool = False):
        call = (
            f"install_release('tool', {version!r}, {published.url!r}, {published.sha256!r}, "
            f"{BINARIES!r}, prefix={str(self.prefix)!r}, bin_dir={str(self.bin_dir)!r})"
        )
        return self.pyinfra(call, dry)

    def switch(self, version: str):
        call = (
            f"switch_release('tool', {version!r}, {BINARIES!r}, prefix={str(self.prefix)!r}, "
            f"bin_dir={str(self.bin_dir)!r})"
        )
        return self.pyinfra(call)

    def installed(self) -> dict:
        """The InstalledReleases fact, read through the pyinfra CLI."""
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinfra",
                "@local",
                "fact",
                "galley.facts.release.InstalledReleases",
                "release=tool",
                f"prefix={self.prefix}",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (hosts,) = json.loads(run.stdout).values()
        return hosts["@local"]

    def run_tool(self, binary: str = "tool") -> str:
        return subprocess.run(
            [self.bin_dir / binary], capture_output=True, text=True, check=True
        ).stdout.strip()

    def restart_count(self) -> int:
        return len(self.restarts.read_text().splitlines()) if self.restarts.exists() else 0


def changed(run: subprocess.CompletedProcess[str]) -> list[str]:
    """Names of the operations pyinfra reported as changed ("Success") in its JSON results."""
    assert run.returncode == 0, run.stdout + run.stderr
    operations = json.loads(run.stdout)["results"]["operations"]
    return [op["name"] for op in operations if op["success"]]


def planned(run: subprocess.CompletedProcess[str]) -> list[str]:
    """Names of the operations a dry run reported as (unconditional) changes."""
    assert run.returncode == 0, run.stdout + run.stderr
    return [op["name"] for op in json.loads(run.stdout)["plan"] if op["hosts_with_change"]]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "mirror"
    root.mkdir()
    server = MirrorServer(("127.0.0.1", 0), root)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield Site(tmp_path, root, f"http://{host}:{port}")
    server.shutdown()
    server.server_close()


def test_dry_run_changes_nothing_then_install_then_no_changes(site: Site) -> None:
    v1 = site.publish("1.0.0")

    dry = site.install("1.0.0", v1, dry=True)
    assert "Install release | Download tool 1.0.0" in planned(dry)
    assert not site.prefix.exists() and not site.bin_dir.exists()

    assert changed(site.install("1.0.0", v1)) == [
        "Install release | Download tool 1.0.0",
        "Install release | Activate tool 1.0.0",
        "Restart tool",
    ]
    assert site.run_tool() == "tool 1.0.0" and site.run_tool("toolctl") == "toolctl 1.0.0"
    assert (site.prefix / "tool" / "current").readlink() == Path("1.0.0")
    # Only the binaries are unpacked (the README is not), with the marker of a complete one.
    assert sorted(p.name for p in (site.prefix / "tool" / "1.0.0").iterdir()) == [
        ".galley-complete",
        "tool",
        "toolctl",
    ]
    assert site.restart_count() == 1
    assert site.installed() == {
        "current": "1.0.0",
        "installed": ["1.0.0"],
        "sha256": {"1.0.0": v1.sha256},
    }

    assert planned(site.install("1.0.0", v1, dry=True)) == []
    assert changed(site.install("1.0.0", v1)) == []
    assert site.restart_count() == 1
    assert sorted(p.name for p in (site.prefix / "tool").iterdir()) == [
        ".download",
        "1.0.0",
        "current",
    ]
    assert not any((site.prefix / "tool" / ".download").iterdir())

    # A binary link removed by hand is put back, and only that link changes.
    (site.bin_dir / "toolctl").unlink()
    current = (site.prefix / "tool" / "current").lstat().st_mtime_ns
    assert changed(site.install("1.0.0", v1)) == [
        "Install release | Activate tool 1.0.0",
        "Restart tool",
    ]
    assert site.run_tool("toolctl") == "toolctl 1.0.0"
    assert (site.prefix / "tool" / "current").lstat().st_mtime_ns == current


def test_checksum_mismatch_fails_and_keeps_the_running_version(site: Site) -> None:
    v1 = site.publish("1.0.0")
    v2 = site.publish("2.0.0")
    site.install("1.0.0", v1)

    bad = Published(v2.url, v1.sha256)
    run = site.install("2.0.0", bad)

    assert run.returncode != 0
    assert f"sha256 mismatch for {v2.url}: expected {v1.sha256} got {v2.sha256}" in (
        run.stdout + run.stderr
    )
    assert site.run_tool() == "tool 1.0.0"
    assert site.installed() == {
        "current": "1.0.0",
        "installed": ["1.0.0"],
        "sha256": {"1.0.0": v1.sha256},
    }
    assert not (site.prefix / "tool" / "2.0.0").exists()
    assert sorted(p.name for p in (site.prefix / "tool").iterdir()) == [
        ".download",
        "1.0.0",
        "current",
    ]
    assert not any((site.prefix / "tool" / ".download").iterdir())
    assert site.restart_count() == 1


def test_a_tarball_without_a_binary_fails_and_keeps_the_running_version(site: Site) -> None:
    v1 = site.publish("1.0.0")
    site.install("1.0.0", v1)
    v2 = site.publish("2.0.0", binaries=["tool"])

    run = site.install("2.0.0", v2)

    assert run.returncode != 0
    assert f"unpacking {v2.url} failed (it must hold tool toolctl)" in run.stdout + run.stderr
    assert site.run_tool() == "tool 1.0.0"
    assert not (site.prefix / "tool" / "2.0.0").exists()
    assert site.restart_count() == 1


def test_same_version_from_another_artifact_is_refused(site: Site) -> None:
    v1 = site.publish("1.0.0")
    site.install("1.0.0", v1)
    other = site.publish("1.0.1")

    run = site.install("1.0.0", other)

    assert run.returncode != 0
    assert "is already installed from another artifact" in run.stdout + run.stderr
    assert site.run_tool() == "tool 1.0.0"


def test_upgrade_switches_current_and_rollback_switches_back(site: Site) -> None:
    v1 = site.publish("1.0.0")
    v2 = site.publish("2.0.0")
    site.install("1.0.0", v1)

    assert changed(site.install("2.0.0", v2)) == [
        "Install release | Download tool 2.0.0",
        "Install release | Activate tool 2.0.0",
        "Restart tool",
    ]
    assert site.run_tool() == "tool 2.0.0"
    assert site.restart_count() == 2
    assert site.installed()["installed"] == ["1.0.0", "2.0.0"]

    assert changed(site.switch("1.0.0")) == ["Switch release | Activate tool 1.0.0", "Restart tool"]
    assert site.run_tool() == "tool 1.0.0" and site.run_tool("toolctl") == "toolctl 1.0.0"
    assert site.restart_count() == 3
    assert changed(site.switch("1.0.0")) == []

    # Installing 2.0.0 again only switches: it is still on disk.
    assert changed(site.install("2.0.0", v2)) == [
        "Install release | Activate tool 2.0.0",
        "Restart tool",
    ]
    assert site.run_tool() == "tool 2.0.0"


def test_rollback_to_a_version_not_installed_fails_and_keeps_current(site: Site) -> None:
    site.install("1.0.0", site.publish("1.0.0"))

    run = site.switch("0.9.0")

    assert run.returncode != 0
    assert "0.9.0/.galley-complete does not exist" in run.stdout + run.stderr
    assert site.run_tool() == "tool 1.0.0"
    assert site.restart_count() == 1


def test_a_stalled_mirror_fails_within_its_timeout_and_keeps_the_running_version(
    site: Site,
) -> None:
    v1 = site.publish("1.0.0")
    site.install("1.0.0", v1)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/tool-v2.0.0.tar.gz"
        call = (
            f"install_release('tool', '2.0.0', {url!r}, {'0' * 64!r}, {BINARIES!r}, "
            f"prefix={str(site.prefix)!r}, bin_dir={str(site.bin_dir)!r}, stall_seconds=2)"
        )
        started = time.monotonic()
        run = site.pyinfra(call)
        elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert f"download of {url} failed (no progress or no answer)" in run.stdout + run.stderr
    assert elapsed < 30
    assert site.run_tool() == "tool 1.0.0"
    assert not (site.prefix / "tool" / "2.0.0").exists()


def _fetch_first(site: Site, tool: Published, kit: Published, *flags: str):
    """A converge's order: both releases read, downloaded in one operation, then each
    installed (activated) and a restart gated on both."""
    downloads = (
        f"Download('tool', '1.0.0', {tool.url!r}, {tool.sha256!r}, {tuple(BINARIES)!r}, "
        f"prefix={str(site.prefix)!r}), "
        f"Download('kit', '2.0.0', {kit.url!r}, {kit.sha256!r}, {tuple(BINARIES)!r}, "
        f"prefix={str(site.prefix)!r})"
    )
    install = (
        "install_release(d.release, d.version, d.url, d.sha256, list(d.binaries), "
        "prefix=d.prefix, bin_dir={bin_dir!r})"
    )
    return run_local(
        site.tmp,
        "from pyinfra.operations import server\n"
        "from galley.host.observed import Wanted, observe\n"
        "from galley.host.release import Download, fetch_releases, install_release\n"
        f"tool, kit = {downloads}\n"
        "wanted = Wanted()\n"
        "wanted.files([tool.marker, kit.marker])\n"
        "observe(wanted)\n"
        "fetch_releases([tool, kit])\n"
        "d = tool\n"
        f"first = {install.format(bin_dir=str(site.bin_dir))}\n"
        "d = kit\n"
        f"second = {install.format(bin_dir=str(site.tmp / 'kit-bin'))}\n"
        "server.shell(name='Restart tool', "
        f"commands=['echo restart >> {site.restarts}'], "
        "_if=lambda: first.changed() or second.changed())\n",
        "--json",
        *flags,
    )


def test_fetch_releases_downloads_all_in_one_operation_then_only_activates(site: Site) -> None:
    tool, kit = site.publish("1.0.0"), site.publish("2.0.0")

    dry = _fetch_first(site, tool, kit, "--dry")
    assert planned(dry) == [
        "Download tool 1.0.0 + kit 2.0.0",
        "Install release | Activate tool 1.0.0",
        "Install release | Activate kit 2.0.0",
    ]
    assert not site.prefix.exists()

    assert changed(_fetch_first(site, tool, kit, "-y")) == [
        "Download tool 1.0.0 + kit 2.0.0",
        "Install release | Activate tool 1.0.0",
        "Install release | Activate kit 2.0.0",
        "Restart tool",
    ]
    assert site.run_tool() == "tool 1.0.0"
    assert (site.tmp / "kit-bin" / "toolctl").resolve().parent.name == "2.0.0"
    assert changed(_fetch_first(site, tool, kit, "-y")) == []
    assert site.restart_count() == 1


def test_fetch_releases_with_one_bad_checksum_activates_nothing(site: Site) -> None:
    tool, kit = site.publish("1.0.0"), site.publish("2.0.0")
    bad = Published(kit.url, tool.sha256)

    run = _fetch_first(site, tool, bad, "-y")

    assert run.returncode != 0
    assert f"sha256 mismatch for {kit.url}" in run.stdout + run.stderr
    assert not (site.prefix / "tool" / "current").exists()
    assert not (site.prefix / "kit").joinpath("2.0.0").exists()
    assert not site.bin_dir.exists()
    assert site.restart_count() == 0
