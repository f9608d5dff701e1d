"""Each droplet its own cgroups, so a kubelet in it can run pods (lab code only).

This machine's cgroups are hybrid: the controllers (cpu, memory, pids, ...) are cgroup v1
hierarchies and nothing runs systemd on the host. systemd-nspawn puts a droplet in the cgroups
of the process that starts it and mounts the controllers read-only inside it. Two changes let
a droplet's kubelet and runc create the cgroups of its pods, each droplet apart from the
others:

- on the host (`place`): every droplet's systemd-nspawn starts in a cgroup of its own in each
  hierarchy (each v1 controller, ``name=systemd`` and the v2 mount),
  ``<the lab's cgroup>/galley-lab/<droplet>``: the root of the droplet's cgroup namespace, so
  what its systemd and kubelet create stays below it. (Without it, every systemd-nspawn, with
  no systemd on the host to give it a scope, split the same root cgroup into ``supervisor``
  and ``payload``, and every droplet's systemd managed the one ``/payload``);
- in the droplet (`DROPLET_UNIT`, written into its root by galley.lab.droplets): early at boot
  the controllers are remounted read-write (the mounts show only the droplet's own subtree)
  and systemd re-executes itself, so it then manages them as on a host with cgroup v1.

`remove` deletes a droplet's cgroups once its processes are gone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
LAB = "galley-lab"

# The unit every droplet carries (written by galley.lab.droplets): what systemd-nspawn does not
# give a machine that a kubelet needs.
DROPLET_UNIT_NAME = "galley-lab-droplet.service"
DROPLET_UNIT = """\
# galley lab: what systemd-nspawn does not give this droplet that a kubelet needs: the cgroup
# v1 controllers writable (its own subtree only), then systemd re-executed to manage them as
# on a host with cgroup v1; and /dev/kmsg, which the kubelet opens for its OOM watcher (here
# /dev/null: the kernel's log is the host's).
[Unit]
Description=galley lab: writable cgroup controllers and /dev/kmsg
DefaultDependencies=no
# Before anything of the boot that talks to systemd while it re-executes.
Before=local-fs-pre.target sysinit.target
Wants=local-fs-pre.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c '[ -e /dev/kmsg ] || ln -s /dev/null /dev/kmsg'
ExecStart=/bin/sh -c 'for dir in /sys/fs/cgroup/*/; do case "$dir" in \\
  */systemd/|*/unified/) ;; *) mountpoint -q "$dir" && [ ! -w "$dir" ] && \\
  mount -o remount,rw,bind "$dir" ;; esac; done; true'
ExecStart=/bin/systemctl daemon-reexec

[Install]
WantedBy=sysinit.target
"""


def hierarchies() -> dict[str, Path]:
    """Each cgroup hierarchy of this machine (the v1 controllers, ``name=systemd`` and the v2
    mount, ``unified``) with this process's cgroup in it."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, names, path = line.split(":", 2)
        for name in ["unified"] if number == "0" else names.split(","):
            mount = ROOT / name.removeprefix("name=")
            if mount.is_dir():
                found[name] = mount / path.lstrip("/")
    return found


def droplet_dirs(name: str) -> list[Path]:
    """The droplet's own cgroup in every hierarchy."""
    return [directory / name for directory in lab_dirs()]


def place(name: str) -> list[Path]:
    """Create the droplet's cgroups (cpusets given every CPU and memory node of their parent)
    and return their ``cgroup.procs`` files: the process starting the droplet writes itself
    into each."""
    procs = []
    for directory in droplet_dirs(name):
        for level in (directory.parent, directory):
            level.mkdir(exist_ok=True)
            for setting in ("cpuset.cpus", "cpuset.mems"):
                own = level / setting
                if own.exists() and not own.read_text().strip():
                    own.write_text((level.parent / setting).read_text())
        procs.append(directory / "cgroup.procs")
    return procs


def join(procs: list[Path]) -> None:
    """Move the calling process into the cgroups whose ``cgroup.procs`` are ``procs`` (run in
    the child before it becomes systemd-nspawn)."""
    for path in procs:
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))


def lab_dirs() -> list[Path]:
    """The lab's own cgroup in every hierarchy (where the droplets' are)."""
    return [base / LAB for base in hierarchies().values()]


def remove(name: str) -> None:
    """Delete the droplet's cgroups, deepest first (those still holding a process stay)."""
    for directory in droplet_dirs(name):
        if not directory.is_dir():
            continue
        for sub in sorted(directory.rglob("*"), key=lambda path: len(path.parts), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        with contextlib.suppress(OSError):
            directory.rmdir()


def remove_lab() -> None:
    """Delete the lab's cgroups, once its droplets' are gone."""
    for directory in lab_dirs():
        with contextlib.suppress(OSError):
            directory.rmdir()
