"""`galley checksums fetch`: pin a release by recording upstream's published sha256 in the
download catalogue (`galley.downloads`), for every artifact of a kind."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pyinfra.api import Inventory

import galley.components as registry
from galley.components.model import Artifact
from galley.downloads import DEFAULT_CATALOGUE, ChecksumError, catalogue_path, fetch

DEFAULT_ARCHES = ("amd64", "arm64")


def kind_artifacts(kind: str, artifacts: Iterable[Artifact]) -> list[Artifact]:
    """The artifacts ``kind`` names: ``kubernetes`` (every artifact versioned by
    ``kubernetes_version``) or one artifact's key or release name."""
    artifacts = list(artifacts)
    if kind == "kubernetes":
        return [a for a in artifacts if a.version_field == "kubernetes_version"]
    found = [a for a in artifacts if kind in (a.key, a.release)]
    if not found:
        known = ", ".join(["kubernetes", *(a.key for a in artifacts)])
        raise ChecksumError(f"unknown kind {kind!r}; known: {known}")
    return found


def published(
    artifacts: Iterable[Artifact], version: str, arches: Iterable[str], data: Any
) -> dict[tuple[str, str, str], tuple[str, str]]:
    """Where upstream publishes the sha256 of each artifact at ``version`` for each arch,
    below the download bases of ``data``: {(key, version, arch): (URL, file name)}."""
    found = {}
    for artifact in artifacts:
        bases = artifact.bases_of(data)
        for arch in arches:
            filename = artifact.url_for(version, arch, bases).rsplit("/", 1)[-1]
            found[artifact.key, version, arch] = (
                artifact.checksum_url_for(version, arch, bases),
                filename,
            )
    return found


def fetch_cli(
    kind: str,
    version: str,
    arches: Iterable[str] | None,
    inventory: Inventory | None,
    catalogue: str | None,
) -> int:
    """`galley checksums fetch`: record upstream's sha256 of ``kind`` ``version``; 0 when
    recorded (or already), 1 on a fetch error or a disagreement, 2 without group data."""
    if inventory is None:
        data: Any = runpy.run_path(str(DEFAULT_CATALOGUE.parent / "all.py"))
    elif hosts := list(inventory):
        data = hosts[0].data
    else:
        print("galley: the inventory has no hosts to read group data from", file=sys.stderr)
        return 2
    path = Path(catalogue) if catalogue else catalogue_path(data)
    try:
        chosen = kind_artifacts(kind, registry.artifacts())
        added = fetch(published(chosen, version, arches or DEFAULT_ARCHES, data), path)
    except ChecksumError as exc:
        print(f"galley: {exc}", file=sys.stderr)
        return 1
    for line in added:
        print(f"recorded {line}")
    print(f"{path}: {len(added)} checksum(s) added for {kind} {version}")
    return 0
