"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from galley.lab.artifacts import ARTIFACTS, build_all
from galley.lab.state import CACHE_DIR


@pytest.fixture(scope="session")
def etcd_release(tmp_path_factory) -> Path:
    """The lab's etcd 3.5.30 release (Debian's build, repacked), unpacked: etcd, etcdctl, etcdutl.

    Built into the lab's cache like `galley lab up` does (downloading the Debian packages from
    the archive the first time), so it needs root.
    """
    if os.geteuid() != 0:
        pytest.skip("building the lab's etcd release needs root (it caches under /var/cache)")
    (etcd,) = [artifact for artifact in ARTIFACTS if artifact.name == "etcd"]
    build_all(CACHE_DIR / "mirror", artifacts=[etcd])
    unpacked = tmp_path_factory.mktemp("etcd-release")
    with tarfile.open(CACHE_DIR / "mirror" / etcd.upstream_path) as tar:
        tar.extractall(unpacked, filter="data")
    (top,) = unpacked.iterdir()
    return top


@pytest.fixture(autouse=True)
def private_host_key_pins(tmp_path_factory, monkeypatch):
    """Keep host keys that inventories pin per droplet out of the operator's home directory."""
    monkeypatch.setenv("GALLEY_KNOWN_HOSTS", str(tmp_path_factory.mktemp("known_hosts")))
