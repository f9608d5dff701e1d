"""Host-side primitives of the lab: commands, the bridge, overlays, processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Commands the lab needs, and the Debian package that provides each.
REQUIRED_COMMANDS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "apt-cacher-ng": "apt-cacher-ng",
    "docker-registry": "docker-registry",
    "ip": "iproute2",
    "mount": "mount",
}


class LabError(RuntimeError):
    """A lab operation failed; the message is meant for the operator as is."""


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 120) -> str:
    """Run a host command and return its stdout; LabError with its stderr when it fails."""
    try:
        result = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"`{' '.join(cmd)}` failed: {detail[-1] if detail else result.returncode}")
    return result.stdout


# What the kubelet insists the kernel is set to (pkg/kubelet/cm setupKernelTunables): it
# would write them, and a droplet's /proc/sys is read-only. Set on the host by `lab up`.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


def set_sysctls(values: dict[str, str]) -> dict[str, str]:
    """Set the host's ``values`` (paths below /proc/sys); return what they were before."""
    before = {}
    for key, value in values.items():
        path = Path("/proc/sys") / key
        before[key] = path.read_text().strip()
        if before[key] != value:
            path.write_text(value)
    return before


def missing_commands() -> list[str]:
    """Required commands absent from PATH, each with the package to install."""
    return [
        f"{command} (apt-get install {package})"
        for command, package in REQUIRED_COMMANDS.items()
        if shutil.which(command) is None
    ]


def address_in_use(address: str) -> str | None:
    """The interface that already holds ``address``, if any."""
    for line in run(["ip", "-o", "-4", "addr", "show"]).splitlines():
        fields = line.split()
        if "inet" in fields and fields[fields.index("inet") + 1].split("/")[0] == address:
            return fields[1]
    return None


def link_exists(name: str) -> bool:
    """Whether a network link called ``name`` exists."""
    return (
        subprocess.run(
            ["ip", "link", "show", name], capture_output=True, stdin=subprocess.DEVNULL
        ).returncode
        == 0
    )


def create_bridge(name: str, address: str, prefix: int) -> None:
    """Create the lab bridge with the host's address on it."""
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "add", f"{address}/{prefix}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_bridge(name: str) -> None:
    """Delete the lab bridge if it is there."""
    if link_exists(name):
        run(["ip", "link", "delete", name])


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point."""
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    """Mount a writable overlay of ``lower`` at ``merged``."""
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ]
    )


def unmount(path: Path) -> None:
    """Unmount ``path`` if mounted, lazily when still busy."""
    if is_mounted(path) and subprocess.run(["umount", str(path)], capture_output=True).returncode:
        run(["umount", "-l", str(path)])


def spawn(cmd: Sequence[str], log_path: Path, before_exec: Callable[[], None] | None = None) -> int:
    """Start ``cmd`` detached in its own session with output to ``log_path``; return its PID.
    ``before_exec`` runs in the child first (e.g. joining cgroups)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=before_exec,
        )
    return process.pid


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def stop_process(pid: int, grace: float = 20.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL; reap it if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.1)
    _reap(pid)


def kill_container_init(hostname: str, timeout: float = 10.0) -> int:
    """SIGKILL every container init (PID 1 of its own PID namespace) whose root filesystem
    says it is ``hostname``; its whole namespace dies with it. Waits until they are gone and
    returns how many there were."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            nspids = next(
                line.split()[1:]
                for line in (entry / "status").read_text().splitlines()
                if line.startswith("NSpid:")
            )
            in_container = len(nspids) > 1 and nspids[-1] == "1"
            if in_container and (entry / "root/etc/hostname").read_text().strip() == hostname:
                found.append(int(entry.name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in found) and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(found)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
