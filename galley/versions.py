"""Kubernetes versions and the version-skew policy, shared by the rollouts and the report."""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_SKEW = 3  # minor versions a kubelet may trail the apiserver (Kubernetes >= 1.28)
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]*)?")


class VersionError(ValueError):
    """Not a Kubernetes version."""


def _parsed(version: str) -> re.Match:
    found = _VERSION.fullmatch(version)
    if not found:
        raise VersionError(f"{version!r} is not a Kubernetes version (like 1.33.6)")
    return found


def bare(version: str) -> str:
    """``v1.33.6`` -> ``1.33.6``; raises VersionError for anything else."""
    return _parsed(version).group(0).removeprefix("v")


def minor_of(version: str) -> tuple[int, int]:
    """(major, minor) of a version."""
    found = _parsed(version)
    return int(found.group(1)), int(found.group(2))


def release_of(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version (a pre-release suffix is not compared)."""
    found = _parsed(version)
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def upgrade_problems(
    target: str, apiservers: Mapping[str, str], allow_downgrade: bool = False
) -> list[str]:
    """Why the apiservers (name -> version) may not move to ``target``: another major, a
    skipped minor, more than one minor down, or a downgrade without ``allow_downgrade``."""
    found = []
    want = release_of(target)
    for server, version in sorted(apiservers.items()):
        have = release_of(version)
        if want[0] != have[0]:
            found.append(
                f"{target} is another major version than the apiserver {server} ({version})"
            )
        elif want[1] > have[1] + 1:
            found.append(
                f"{target} skips a minor version: the apiserver {server} is at {version}, "
                f"go to {have[0]}.{have[1] + 1} first"
            )
        elif want[1] < have[1] - 1:
            found.append(
                f"{target} is more than one minor version older than the apiserver {server} "
                f"({version})"
            )
        elif want < have and not allow_downgrade:
            found.append(
                f"{target} is older than the apiserver {server} ({version}): a downgrade needs "
                "--allow-downgrade"
            )
    return found


def skew_problems(target: str, apiservers: Mapping[str, str], what: str = "kubelet") -> list[str]:
    """Why a ``what`` (kubelet or kube-proxy) at ``target`` may not talk to these apiservers
    (name -> version): newer than any of them, or more than `MAX_SKEW` minors older."""
    found = []
    want = minor_of(target)
    for server, version in sorted(apiservers.items()):
        have = minor_of(version)
        if want[0] != have[0] or want[1] > have[1]:
            found.append(f"{what} {target} would be newer than the apiserver {server} ({version})")
        elif have[1] - want[1] > MAX_SKEW:
            found.append(
                f"{what} {target} is more than {MAX_SKEW} minor versions older than the "
                f"apiserver {server} ({version})"
            )
    return found
