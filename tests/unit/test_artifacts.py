"""The lab's artifact mirror: building repacked release tarballs and serving them over HTTP."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from galley.lab.artifacts import ARTIFACTS, ArtifactError, build_all, checksums
from galley.lab.mirror import MirrorServer

ETCD = ARTIFACTS[0]
TOP = "etcd-v3.5.30-linux-amd64"


def make_deb(out_dir: Path, package: str, version: str, binaries: dict[str, bytes]) -> Path:
    """Build a tiny .deb holding ``usr/bin/<binary>`` files."""
    tree = out_dir / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: galley tests <tests@example.invalid>\nDescription: test package\n"
    )
    (tree / "usr" / "bin").mkdir(parents=True)
    for name, data in binaries.items():
        path = tree / "usr" / "bin" / name
        path.write_bytes(data)
        path.chmod(0o755)
    deb = out_dir / f"{package}_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", tree, deb], check=True, capture_output=True
    )
    return deb


FAKE_BINARIES = {
    "etcd-server": {"etcd": b"etcd server\n", "etcdutl": b"etcd util\n"},
    "etcd-client": {"etcdctl": b"etcd client\n"},
}


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """A source dir holding small etcd-server/etcd-client 3.5.30-2 .debs."""
    src = tmp_path / "sources"
    src.mkdir()
    build = tmp_path / "deb-build"
    build.mkdir()
    for package, binaries in FAKE_BINARIES.items():
        make_deb(build, package, "3.5.30-2", binaries).rename(src / f"{package}_3.5.30-2_amd64.deb")
    return src


def tarball(cache_dir: Path) -> Path:
    return cache_dir / ETCD.upstream_path


def test_etcd_is_repacked_with_the_upstream_layout(tmp_path: Path, source_dir: Path) -> None:
    cache = tmp_path / "mirror"
    built = build_all(cache, source_dir, [ETCD])

    path = tarball(cache)
    assert path == cache / (
        "github.com/etcd-io/etcd/releases/download/v3.5.30/etcd-v3.5.30-linux-amd64.tar.gz"
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert built == {ETCD.upstream_path: digest} == checksums(cache, [ETCD])
    check = subprocess.run(
        ["sha256sum", "-c", f"{path.name}.sha256"], cwd=path.parent, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [
            TOP,
            f"{TOP}/README.md",
            f"{TOP}/etcd",
            f"{TOP}/etcdctl",
            f"{TOP}/etcdutl",
        ]
        assert members[TOP].isdir()
        for package, binaries in FAKE_BINARIES.items():
            for name, data in binaries.items():
                member = members[f"{TOP}/{name}"]
                assert member.mode == 0o755, package
                assert tar.extractfile(member).read() == data
        readme = tar.extractfile(members[f"{TOP}/README.md"]).read().decode()
    assert "This is not an upstream release" in readme
    assert "etcd-server 3.5.30-2" in readme and "etcd-client 3.5.30-2" in readme


def test_rebuilding_from_the_same_debs_gives_the_same_sha256(
    tmp_path: Path, source_dir: Path
) -> None:
    first = build_all(tmp_path / "one", source_dir, [ETCD])
    for deb in source_dir.glob("*.deb"):
        os.utime(deb, (1_000_000, 1_000_000))
    second = build_all(tmp_path / "two", source_dir, [ETCD])
    assert first == second
    assert tarball(tmp_path / "one").read_bytes() == tarball(tmp_path / "two").read_bytes()


def test_build_skips_present_artifacts_and_repairs_damaged_ones(
    tmp_path: Path, source_dir: Path
) -> None:
    cache = tmp_path / "mirror"
    built = build_all(cache, source_dir, [ETCD])
    before = tarball(cache).stat()

    assert build_all(cache, source_dir, [ETCD]) == built
    after = tarball(cache).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    with tarball(cache).open("ab") as f:
        f.write(b"damage")
    assert build_all(cache, source_dir, [ETCD]) == built
    assert hashlib.sha256(tarball(cache).read_bytes()).hexdigest() == built[ETCD.upstream_path]
    assert sorted(p.name for p in tarball(cache).parent.iterdir()) == [
        "SHA256SUMS",  # published as upstream publishes it
        "etcd-v3.5.30-linux-amd64.tar.gz",
        "etcd-v3.5.30-linux-amd64.tar.gz.sha256",
    ]


def test_an_artifact_made_from_other_inputs_is_rebuilt(tmp_path: Path) -> None:
    (plugin,) = [a for a in ARTIFACTS if a.name == "flannel-cni-plugin"]
    path = tmp_path / plugin.upstream_path
    fresh = build_all(tmp_path, tmp_path, [plugin])[plugin.upstream_path]
    origin = path.with_name(path.name + ".origin")
    assert origin.read_text() == plugin.builder.origin(plugin, tmp_path)
    mtime = path.stat().st_mtime_ns
    assert build_all(tmp_path, tmp_path, [plugin])[plugin.upstream_path] == fresh
    assert path.stat().st_mtime_ns == mtime  # the same inputs: left as it is
    # A stand-in built from older code, recorded with its own (matching) checksum.
    path.write_bytes(b"an older stand-in")
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
    )
    origin.write_text("older code")
    assert build_all(tmp_path, tmp_path, [plugin])[plugin.upstream_path] == fresh
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fresh


def test_checksums_of_an_unbuilt_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"etcd is not built in .*: run build_all"):
        checksums(tmp_path, [ETCD])


FAKE_APT = """#!/bin/sh
echo "$(basename "$0") $*" >> "$APT_LOG"
case "$(basename "$0") $*" in
  *" update") exit 0 ;;
  "apt-cache "*) printf 'Package: x\\nVersion: %s\\n\\n' $APT_VERSIONS ;;
  *" download "*=3.5.30-2) cp "$APT_DEBS"/*.deb . ;;
  *) echo "E: unexpected $*" >&2; exit 100 ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path: Path, source_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """apt-get/apt-cache stand-ins on PATH that "download" the fake .debs; returns their log."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "apt-cache"):
        (bin_dir / tool).write_text(FAKE_APT)
        (bin_dir / tool).chmod(0o755)
    debs = tmp_path / "archive"
    source_dir.rename(debs)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("APT_DEBS", str(debs))
    monkeypatch.setenv("APT_LOG", str(tmp_path / "apt.log"))
    monkeypatch.setenv("APT_VERSIONS", "3.5.30-2")
    return tmp_path / "apt.log"


def test_missing_debs_are_downloaded_from_sid(tmp_path: Path, fake_apt: Path) -> None:
    sources = tmp_path / "empty-sources"
    built = build_all(tmp_path / "mirror", sources, [ETCD])

    assert built[ETCD.upstream_path] == checksums(tmp_path / "mirror", [ETCD])[ETCD.upstream_path]
    log = fake_apt.read_text()
    assert "download etcd-server=3.5.30-2" in log
    assert f"-oDir::Etc::sourcelist={sources}/apt/sources.list" in log
    assert " sid main" in (sources / "apt" / "sources.list").read_text()
    assert sorted(p.name for p in sources.glob("*.deb")) == [
        "etcd-client_3.5.30-2_amd64.deb",
        "etcd-server_3.5.30-2_amd64.deb",
    ]


def test_a_version_missing_from_sid_is_a_clear_error(
    tmp_path: Path, fake_apt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APT_VERSIONS", "3.5.31-1")
    with pytest.raises(ArtifactError) as error:
        build_all(tmp_path / "mirror", tmp_path / "sources", [ETCD])
    assert str(error.value) == (
        "apt-get download etcd-server from sid failed: no 3.5.30 (available: 3.5.31-1)"
    )
    assert not tarball(tmp_path / "mirror").exists()


def test_repack_of_the_real_debian_build_runs(etcd_release: Path) -> None:
    assert etcd_release.name == TOP
    assert sorted(p.name for p in etcd_release.iterdir()) == [
        "README.md",
        "etcd",
        "etcdctl",
        "etcdutl",
    ]
    out = subprocess.run([etcd_release / "etcd", "--version"], capture_output=True, text=True)
    assert "etcd Version: 3.5.30" in out.stdout


# --- the mirror server


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A mirror on 127.0.0.1 serving tmp_path/root (with a secret next to the root)."""
    root = tmp_path / "root"
    (root / "dl.example" / "v1").mkdir(parents=True)
    (root / "dl.example" / "v1" / "tool.tar.gz").write_bytes(b"x" * 1000)
    (tmp_path / "secret").write_text("secret")
    (root / "escape").symlink_to(tmp_path / "secret")
    server = MirrorServer(("127.0.0.1", 0), root)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


def request(address: tuple[str, int], method: str, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_mirror_serves_files_with_content_length(mirror: tuple[str, int]) -> None:
    status, headers, body = request(mirror, "GET", "/dl.example/v1/tool.tar.gz")
    assert (status, headers["Content-Length"], body) == (200, "1000", b"x" * 1000)


def test_mirror_head_sends_headers_only(mirror: tuple[str, int]) -> None:
    status, headers, body = request(mirror, "HEAD", "/dl.example/v1/tool.tar.gz?x=1")
    assert (status, headers["Content-Length"], body) == (200, "1000", b"")


@pytest.mark.parametrize(
    "path",
    [
        "/dl.example/v1/missing.tar.gz",
        "/dl.example/v1/",
        "/",
        "/../secret",
        "/dl.example/../../secret",
        "/%2e%2e/secret",
        "/..%2fsecret",
        "/escape",
    ],
)
def test_mirror_answers_404_outside_files_of_its_root(mirror: tuple[str, int], path: str) -> None:
    status, _, body = request(mirror, "GET", path)
    assert status == 404
    assert b"secret" not in body


def test_mirror_command_serves_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("hello")
    process = subprocess.Popen(
        [sys.executable, "-m", "galley.lab.mirror", "--listen", "127.0.0.1:0", "--root", tmp_path],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", banner).group(1))
        assert request(("127.0.0.1", port), "GET", "/file")[::2] == (200, b"hello")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
