"""The shared Debian 12 root filesystem every droplet overlays, built once with debootstrap."""

from __future__ import annotations

import shutil
from pathlib import Path

from galley.lab.system import LabError, run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "python3",
    "ca-certificates",
    "curl",
    # Debian installs it by default (Priority: important), as on a Debian 12 droplet; galley
    # still declares it for its host firewall, and installs it where it is missing.
    "nftables",
)
STAMP = ".galley-rootfs"


def _stamp_text() -> str:
    return f"{SUITE} {','.join(PACKAGES)}\n"


def rootfs_dir(cache_dir: Path) -> Path:
    """Where the cached root filesystem lives."""
    return cache_dir / f"rootfs-{SUITE}"


def ensure_rootfs(cache_dir: Path, progress=print) -> Path:
    """Return the cached root filesystem, building it first when absent or outdated.

    The build goes to a temporary directory and is renamed into place only when complete, so
    an interrupted build never leaves a half-made cache behind.
    """
    root = rootfs_dir(cache_dir)
    stamp = root / STAMP
    if stamp.exists() and stamp.read_text() == _stamp_text():
        return root
    progress(f"building the Debian {SUITE} root filesystem in {root} (once; about a minute)")
    building = root.with_name(root.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            MIRROR,
        ],
        timeout=900,
    )
    _make_generic(building)
    (building / STAMP).write_text(_stamp_text())
    shutil.rmtree(root, ignore_errors=True)
    building.rename(root)
    return root


def _make_generic(root: Path) -> None:
    """Strip per-machine identity so each droplet gets its own, and enable networkd."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.is_symlink():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    if not (root / "lib/systemd/system/systemd-networkd.service").exists():
        raise LabError(
            f"{root} has no systemd-networkd unit; delete it and run `galley lab up` again"
        )
