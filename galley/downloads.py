"""The download catalogue: the sha256 of every artifact galley installs, per version and
architecture, in one data file (``group_data/checksums.json``) that `fetch` keeps up to date.

Shape: ``{"<artifact key>": {"<version>": {"<arch>": "<sha256>"}}}``, keys as the components
declare them (``etcd``, ``kube_apiserver``, ``cni_plugins``, ...). Group or host data may
name another file (``checksums_file``) or replace one artifact's entry
(``<key>_checksums = {version: {arch: sha256}}``, e.g. the lab's own builds).

`fetch` reads upstream's published checksum files (dl.k8s.io's ``<binary>.sha256``, the
``SHA256SUMS``-style lists of GitHub releases) from the configured download bases and records
them. A fetched value that disagrees with a recorded one is an error, never an overwrite.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import requests

DEFAULT_CATALOGUE = Path(__file__).resolve().parents[1] / "group_data" / "checksums.json"
SHA256 = re.compile(r"[0-9a-f]{64}")
FETCH_TIMEOUT = (10, 30)  # connect, read seconds
MAX_CHECKSUM_FILE = 1 << 20

Catalogue = dict[str, dict[str, dict[str, str]]]


class ChecksumError(Exception):
    """A checksum could not be fetched, parsed or recorded; one line for the operator."""


def catalogue_path(data: Any) -> Path:
    """The catalogue file named by ``checksums_file`` in ``data``, else the default one."""
    named = data.get("checksums_file") if data is not None else None
    return Path(named) if named else DEFAULT_CATALOGUE


@cache
def _read(path: Path, mtime: float) -> Catalogue:
    try:
        loaded = json.loads(path.read_text())
    except ValueError as exc:
        raise ChecksumError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ChecksumError(f"{path} must hold an object of artifacts")
    return loaded


def load_catalogue(path: Path) -> Catalogue:
    """The catalogue in ``path`` ({} when the file does not exist)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return {}
    return _read(path, mtime)


def checksums_field(key: str) -> str:
    """The group-data key that replaces the catalogue's entry of artifact ``key``."""
    return f"{key}_checksums"


def checksums_of(data: Any, key: str) -> Mapping:
    """``{version: {arch: sha256}}`` of artifact ``key``: ``<key>_checksums`` from ``data``
    if set (it replaces the catalogue's entry), else the catalogue's."""
    override = data.get(checksums_field(key))
    if override is not None:
        return override
    return load_catalogue(catalogue_path(data)).get(key, {})


def sha256_of(data: Any, key: str, version: str, arch: str) -> str | None:
    """The recorded sha256 of artifact ``key`` at ``version`` for ``arch``, or None."""
    checksums = checksums_of(data, key)
    by_arch = checksums.get(version) if isinstance(checksums, Mapping) else None
    return by_arch.get(arch) if isinstance(by_arch, Mapping) else None


def parse_sha256(text: str, filename: str) -> str | None:
    """The sha256 of ``filename`` in a published checksum file: a lone digest (dl.k8s.io's
    ``.sha256``) or ``sha256sum`` lines (``<digest>  [*]<name>``, e.g. ``SHA256SUMS``)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 1 and SHA256.fullmatch(parts[0].lower()):
            return parts[0].lower()
        if len(parts) >= 2 and parts[1].lstrip("*").removeprefix("./") == filename:
            digest = parts[0].lower()
            return digest if SHA256.fullmatch(digest) else None
    return None


def fetch_sha256(url: str, filename: str) -> str:
    """Read the sha256 of ``filename`` from upstream's checksum file at ``url``."""
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT, stream=True)
        body = response.raw.read(MAX_CHECKSUM_FILE + 1, decode_content=True)
    except requests.RequestException as exc:
        raise ChecksumError(f"fetching {url} failed: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise ChecksumError(f"fetching {url} failed: HTTP {response.status_code}")
    if len(body) > MAX_CHECKSUM_FILE:
        raise ChecksumError(f"{url} is larger than a checksum file can be")
    digest = parse_sha256(body.decode("utf-8", "replace"), filename)
    if digest is None:
        raise ChecksumError(f"{url} holds no sha256 for {filename}")
    return digest


def record(path: Path, found: Mapping[tuple[str, str, str], str]) -> list[str]:
    """Add ``{(key, version, arch): sha256}`` to the catalogue at ``path``, atomically.

    Raises ChecksumError, writing nothing, when any value disagrees with a recorded one.
    Returns one line per value added (none when everything was already recorded).
    """
    catalogue = json.loads(json.dumps(load_catalogue(path)))  # a private copy
    conflicts, added = [], []
    for (key, version, arch), digest in sorted(found.items()):
        recorded = catalogue.get(key, {}).get(version, {}).get(arch)
        if recorded is None:
            catalogue.setdefault(key, {}).setdefault(version, {})[arch] = digest
            added.append(f"{key} {version} {arch}: {digest}")
        elif recorded != digest:
            conflicts.append(
                f"{key} {version} {arch}: upstream publishes {digest} but {path} records {recorded}"
            )
    if conflicts:
        raise ChecksumError(
            "fetched checksums disagree with the recorded ones (nothing was written): "
            + "; ".join(conflicts)
        )
    if added:
        _write_atomically(path, json.dumps(catalogue, indent=2, sort_keys=True) + "\n")
    return added


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(published: Mapping[tuple[str, str, str], tuple[str, str]], path: Path) -> list[str]:
    """Fetch every ``{(key, version, arch): (checksum file URL, file name)}`` and record the
    values in the catalogue at ``path`` (nothing is written if any fetch fails)."""
    return record(path, {entry: fetch_sha256(*where) for entry, where in published.items()})
