"""Prepare and boot one droplet: an overlay on the shared root, its identity, systemd-nspawn."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from galley.lab import cgroups
from galley.lab.state import Droplet
from galley.lab.system import LabError, link_exists, mount_overlay, pid_alive, spawn

NETWORK_UNIT = """[Match]
Name=host0

[Link]
MACAddress={mac}

[Network]
Address={address}/{prefix}
LinkLocalAddressing=no
IPv6AcceptRA=no
"""


def network_unit(address: str, prefix: int) -> str:
    """The droplet's networkd unit: its address, and a MAC made of that address (02:00 and its
    four bytes). A droplet that takes over a removed one's address then answers to the entry
    the host's and its peers' ARP caches still hold; with nspawn's own MAC (from the machine's
    name) they would send to the gone droplet until the entry ages out (about 20 s)."""
    mac = ":".join(["02", "00", *(f"{int(byte):02x}" for byte in address.split("."))])
    return NETWORK_UNIT.format(address=address, prefix=prefix, mac=mac)


APT_PROXY_CONF = 'Acquire::http::Proxy "{proxy}";\n'


# Directories a droplet keeps on the host's own filesystem rather than in its overlay root:
# containerd's overlayfs snapshots cannot have an overlay as their upper layer (the mount
# fails with "invalid argument"), as a real droplet's disk is not one.
DISK_DIRS = {"containerd": "/var/lib/containerd"}


def droplet_paths(lab_dir: Path, name: str) -> dict[str, Path]:
    """The overlay directories of droplet ``name`` and its `DISK_DIRS`."""
    base = lab_dir / "droplets" / name
    paths = {"base": base, "upper": base / "upper", "work": base / "work", "root": base / "root"}
    return paths | {key: base / "disk" / key for key in DISK_DIRS}


def prepare_root(
    droplet: Droplet,
    rootfs: Path,
    lab_dir: Path,
    *,
    prefix: int,
    public_key: str,
    apt_proxy: str,
    hosts: dict[str, str],
) -> Path:
    """Mount the droplet's overlay and write its identity; return its root directory."""
    paths = droplet_paths(lab_dir, droplet.name)
    mount_overlay(rootfs, paths["upper"], paths["work"], paths["root"])
    for key in DISK_DIRS:
        paths[key].mkdir(parents=True, exist_ok=True)
    root = paths["root"]
    (root / "etc/hostname").write_text(f"{droplet.name}\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    lines = ["127.0.0.1 localhost"] + [f"{addr} {name}" for name, addr in sorted(hosts.items())]
    (root / "etc/hosts").write_text("\n".join(lines) + "\n")
    network = root / "etc/systemd/network/10-host0.network"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text(network_unit(droplet.address, prefix))
    (root / "etc/apt/apt.conf.d/01galley-lab-proxy").write_text(
        APT_PROXY_CONF.format(proxy=apt_proxy)
    )
    units = root / "etc/systemd/system"
    wants = units / "sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (units / cgroups.DROPLET_UNIT_NAME).write_text(cgroups.DROPLET_UNIT)
    link = wants / cgroups.DROPLET_UNIT_NAME
    if not link.is_symlink():
        link.symlink_to(f"../{cgroups.DROPLET_UNIT_NAME}")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key)
    (ssh_dir / "authorized_keys").chmod(0o600)
    subprocess.run(["ssh-keygen", "-A", "-f", str(root)], check=True, capture_output=True)
    return root


def host_key_lines(root: Path, address: str) -> list[str]:
    """known_hosts lines for the droplet's fresh host keys."""
    return [
        f"{address} {' '.join(key.read_text().split()[:2])}"
        for key in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub"))
    ]


def nspawn_command(name: str, root: Path, bridge: str) -> list[str]:
    """The systemd-nspawn command line that boots a droplet (its `DISK_DIRS` bound in)."""
    disk = root.parent / "disk"
    return [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "--boot",
        f"--directory={root}",
        f"--machine={name}",
        f"--network-bridge={bridge}",
        "--console=pipe",
        # What runc needs that nspawn withholds from a machine by default: a session keyring
        # of each container's own (system calls nspawn's filter denies), and CAP_SYS_RESOURCE
        # to set a pod's oom_score_adj below its parent's (the kubelet's -998 for sandboxes).
        "--system-call-filter=@keyring",
        "--capability=CAP_SYS_RESOURCE",
        *(f"--bind={disk / key}:{path}" for key, path in DISK_DIRS.items()),
    ]


# systemd-nspawn keeps a directory per machine here while it runs; this machine's /run is on
# disk (no systemd), and nspawn refuses to remove one left by a run that was killed.
PROPAGATE = Path("/run/systemd/nspawn/propagate")


def veth_name(name: str) -> str | None:
    """The host side of the droplet's veth as systemd-nspawn names it, or None when that name
    would pass the kernel's 15 characters: nspawn then shortens it with a hash of its own, and
    a cut-off name would be another droplet's (``lab-worker-10`` cut is ``lab-worker-1``'s)."""
    veth = f"vb-{name}"
    return veth if len(veth) <= 15 else None


def clear_leftovers(name: str) -> None:
    """Remove what a droplet ``name`` that is gone left behind for the next of its name: the
    propagation directory of an nspawn that did not clean up, and its veth while the kernel
    is still tearing its network namespace down (nspawn would fail with "File exists")."""
    shutil.rmtree(PROPAGATE / name, ignore_errors=True)
    veth = veth_name(name)
    if veth and link_exists(veth):
        subprocess.run(["ip", "link", "delete", veth], capture_output=True, check=False)


def boot(droplet: Droplet, root: Path, bridge: str, log_dir: Path) -> int:
    """Boot the droplet in the background, in cgroups of its own (galley.lab.cgroups); return
    the systemd-nspawn PID."""
    clear_leftovers(droplet.name)
    procs = cgroups.place(droplet.name)
    return spawn(
        nspawn_command(droplet.name, root, bridge),
        log_dir / f"{droplet.name}.log",
        before_exec=lambda: cgroups.join(procs),
    )


def ssh_command(address: str, key: str, known_hosts: str, *remote: str) -> list[str]:
    """ssh to a droplet as root with the lab's key and pinned host keys."""
    return [
        "ssh",
        "-i",
        key,
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=3",
        "-o",
        "LogLevel=ERROR",
        f"root@{address}",
        *remote,
    ]


def wait_ready(
    droplet: Droplet, key: str, known_hosts: str, log: Path, timeout: float = 90
) -> None:
    """Wait until the droplet answers SSH and systemd reports the system running; fail at
    once, with the last line of its log (``log``), if systemd-nspawn exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if droplet.pid and not pid_alive(droplet.pid):
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            reason = lines[-1] if lines else "no output"
            raise LabError(f"{droplet.name}: systemd-nspawn exited: {reason}")
        result = subprocess.run(
            ssh_command(
                droplet.address, key, known_hosts, "systemctl", "is-system-running", "--wait"
            ),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        state = result.stdout.strip()
        if state == "running":
            return
        if state == "degraded":
            failed = subprocess.run(
                ssh_command(
                    droplet.address,
                    key,
                    known_hosts,
                    "systemctl --failed --no-legend --plain | cut -d' ' -f1",
                ),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            ).stdout.split()
            raise LabError(f"{droplet.name} booted degraded; failed units: {' '.join(failed)}")
        last = state or result.stderr.strip() or "no answer"
        time.sleep(0.5)
    raise LabError(f"{droplet.name} ({droplet.address}) not ready after {timeout:.0f}s: {last}")
