"""The download catalogue: lookups, upstream's checksum file formats, and `galley checksums
fetch` against the lab's mirror code serving upstream's layout on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import galley.components as registry
from galley.checksums import kind_artifacts, published
from galley.components.etcd import ETCD
from galley.downloads import ChecksumError, fetch, parse_sha256, record, sha256_of
from galley.lab.mirror import MirrorServer

REPO = Path(__file__).resolve().parents[2]
A, B = "a" * 64, "b" * 64
VERSION = "1.33.6"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


def test_published_checksum_files_are_read_in_both_upstream_formats():
    assert parse_sha256(f"{A}\n", "kubelet") == A  # dl.k8s.io: the bare digest
    listing = f"{B}  etcd-v3.5.30-linux-arm64.tar.gz\n{A}  etcd-v3.5.30-linux-amd64.tar.gz\n"
    assert parse_sha256(listing, "etcd-v3.5.30-linux-amd64.tar.gz") == A  # SHA256SUMS
    assert parse_sha256(f"{A} *runc.amd64\n", "runc.amd64") == A  # binary-mode sha256sum
    assert parse_sha256(listing, "etcd-v3.5.31-linux-amd64.tar.gz") is None
    assert parse_sha256("<html>not found</html>", "kubelet") is None
    assert parse_sha256(f"{'z' * 64}  kubelet\n", "kubelet") is None


def test_data_replaces_the_catalogue_entry_and_the_catalogue_is_the_default(tmp_path):
    etcd = ETCD.artifacts[0].key
    catalogue = tmp_path / "checksums.json"
    catalogue.write_text(json.dumps({"etcd": {"3.5.30": {"amd64": A}}}))
    data = {"checksums_file": str(catalogue)}
    assert sha256_of(data, etcd, "3.5.30", "amd64") == A
    assert sha256_of(data, etcd, "3.5.30", "arm64") is None
    assert (
        sha256_of(data | {"etcd_checksums": {"3.5.30": {"arm64": B}}}, etcd, "3.5.30", "arm64") == B
    )
    assert sha256_of(data | {"etcd_checksums": {}}, etcd, "3.5.30", "amd64") is None


def test_the_shipped_catalogue_pins_etcd_from_upstream():
    assert sha256_of({}, ETCD.artifacts[0].key, "3.5.30", "amd64") == (
        "a495115162845640be08c6cda069ff961260dbced53207c5a83b1b006ff2ea8e"
    )


def test_record_adds_new_values_and_refuses_a_disagreement_without_writing(tmp_path):
    path = tmp_path / "checksums.json"
    assert record(path, {("kubelet", VERSION, "amd64"): A}) == [f"kubelet {VERSION} amd64: {A}"]
    assert record(path, {("kubelet", VERSION, "amd64"): A}) == []
    before = path.read_text()
    with pytest.raises(ChecksumError, match=f"upstream publishes {B} but .* records {A}"):
        record(path, {("kubelet", VERSION, "amd64"): B, ("kube_proxy", VERSION, "amd64"): A})
    assert path.read_text() == before


@pytest.fixture
def upstream(tmp_path):
    """The mirror's HTTP server on 127.0.0.1 serving dl.k8s.io's layout for VERSION."""
    root = tmp_path / "mirror"
    directory = root / "dl.k8s.io" / "release" / f"v{VERSION}" / "bin" / "linux" / "amd64"
    directory.mkdir(parents=True)
    digests = {}
    for index, binary in enumerate(BINARIES):
        digests[binary] = f"{index:x}" * 64
        (directory / binary).write_bytes(b"binary")
        (directory / f"{binary}.sha256").write_text(digests[binary] + "\n")
    server = MirrorServer(("127.0.0.1", 0), root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", directory, digests
    server.shutdown()
    server.server_close()


def test_fetch_records_every_kubernetes_binary_of_a_version(upstream, tmp_path):
    base, _, digests = upstream
    catalogue = tmp_path / "checksums.json"
    artifacts = kind_artifacts("kubernetes", registry.artifacts())
    data = {"dl_k8s_base_url": f"{base}/dl.k8s.io"}
    added = fetch(published(artifacts, VERSION, ["amd64"], data), catalogue)
    assert len(added) == 5
    recorded = json.loads(catalogue.read_text())
    assert {key: recorded[key][VERSION]["amd64"] for key in recorded} == {
        binary.replace("-", "_"): digest for binary, digest in digests.items()
    }


def _fetch_cli(base: str, catalogue: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`galley checksums fetch kubernetes VERSION` with an inventory pointing at ``base``."""
    inventory = tmp_path / "inventory.py"
    inventory.write_text(
        f"control_plane = [('cp-1', {{'dl_k8s_base_url': '{base}/dl.k8s.io', "
        f"'checksums_file': '{catalogue}'}})]\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "galley.cli", "checksums", "fetch", "kubernetes", VERSION,
         "--arch", "amd64", "--inventory", str(inventory)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip


def test_fetch_cli_records_once_then_fails_loudly_on_a_tampered_checksum(upstream, tmp_path):
    base, directory, _ = upstream
    catalogue = tmp_path / "checksums.json"
    done = _fetch_cli(base, catalogue, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"5 checksum(s) added for kubernetes {VERSION}")
    again = _fetch_cli(base, catalogue, tmp_path)
    assert (again.returncode, again.stdout.strip().splitlines()[-1]) == (
        0,
        f"{catalogue}: 0 checksum(s) added for kubernetes {VERSION}",
    )
    recorded = catalogue.read_text()

    (directory / "kubelet.sha256").write_text(B + "\n")
    tampered = _fetch_cli(base, catalogue, tmp_path)
    assert tampered.returncode == 1
    assert f"kubelet {VERSION} amd64: upstream publishes {B}" in tampered.stderr
    assert "Traceback" not in tampered.stderr and catalogue.read_text() == recorded

    (directory / "kube-proxy.sha256").write_text("<html>rate limited</html>\n")
    garbled = _fetch_cli(base, catalogue, tmp_path)
    assert garbled.returncode == 1
    assert f"v{VERSION}/bin/linux/amd64/kube-proxy.sha256 holds no sha256 for kube-proxy" in (
        garbled.stderr
    )


def test_fetch_of_a_missing_release_names_the_url(upstream, tmp_path):
    base, _, _ = upstream
    with pytest.raises(
        ChecksumError, match=r"v9\.9\.9/bin/linux/amd64/kubelet\.sha256 failed: HTTP 404"
    ):
        artifacts = kind_artifacts("kubelet", registry.artifacts())
        data = {"dl_k8s_base_url": f"{base}/dl.k8s.io"}
        fetch(published(artifacts, "9.9.9", ["amd64"], data), tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ChecksumError, match="unknown kind 'calico'; known: kubernetes, ") as raised:
        kind_artifacts("calico", registry.artifacts())
    known = str(raised.value).split("known: ", 1)[1].split(", ")
    assert {"etcd", "flannel", "node_exporter", "prometheus"} <= set(known)
