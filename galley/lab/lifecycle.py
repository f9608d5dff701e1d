"""`galley lab up | down | status`: bring the lab up, take exactly it down, describe it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from galley.lab import droplets as droplet_ops
from galley.lab import services, system
from galley.lab.artifacts import build_all
from galley.lab.openbao import OpenBao, bao_binary
from galley.lab.rootfs import ensure_rootfs
from galley.lab.state import CACHE_DIR, LAB_DIR, Droplet, LabState, remove_state
from galley.lab.system import LabError
from galley.lab.topology import BRIDGE, CLUSTER, GATEWAY, NETWORK, DropletPlan

Progress = Callable[[str], None]
# The lab's OpenBao keeps its configuration, raft data, TLS files and credentials here.
VAULT_DIR = "openbao"


# inotify instances each droplet's systemd and services hold (measured: about 5), plus the
# host's own; the kernel's per-user limit is shared by all containers (all run as root).
INOTIFY_PER_DROPLET = 6
INOTIFY_SPARE = 16
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


def inotify_needed(droplets: int) -> int:
    """The fs.inotify.max_user_instances a lab of ``droplets`` needs to boot cleanly."""
    return INOTIFY_SPARE + INOTIFY_PER_DROPLET * droplets


def preflight(lab_dir: Path, droplets: int) -> None:
    """Refuse to start when the machine cannot host the lab; nothing is created yet."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, mounts and a bridge): run it as root")
    missing = system.missing_commands()
    if missing:
        raise LabError("missing on this machine: " + ", ".join(missing))
    bao_binary()  # the lab's Vault
    if system.link_exists(BRIDGE):
        raise LabError(
            f"network link {BRIDGE} already exists but no lab state is recorded in {lab_dir}; "
            f"remove it (`ip link delete {BRIDGE}`) if it is a leftover"
        )
    holder = system.address_in_use(str(GATEWAY))
    if holder:
        raise LabError(f"the lab's bridge address {GATEWAY} is already taken by {holder}")
    host, port = services.VAULT_ADDRESS
    if services.port_taken(host, port):
        raise LabError(f"{host}:{port} is already in use; the lab's Vault needs it")
    limit, needed = int(INOTIFY_LIMIT.read_text()), inotify_needed(droplets)
    if limit < needed:
        raise LabError(
            f"{droplets} droplets need fs.inotify.max_user_instances >= {needed} (now {limit}): "
            f"sysctl -w fs.inotify.max_user_instances={needed}"
        )


def up(
    plans: list[DropletPlan],
    lab_dir: Path = LAB_DIR,
    cache_dir: Path = CACHE_DIR,
    progress: Progress = print,
) -> LabState:
    """Boot the lab described by ``plans``; on any failure remove what was created and re-raise.

    A stale lab (some of its processes gone, e.g. after a reboot) is taken down first and booted
    anew, its Vault included: a fresh OpenBao, initialised and unsealed, not the old raft data
    unsealed again. The droplets come back empty (no etcd data, no certificates), so a Vault
    keeping the old CAs, roles and shared secrets would describe a cluster that no longer
    exists; `galley vault bootstrap --cluster lab` sets the new one up as on a first `up`.
    """
    existing = LabState.load(lab_dir)
    if existing and all_running(existing):
        progress(
            f"the lab is already up ({len(existing.droplets)} droplets); "
            "`galley lab down` first to change it"
        )
        return existing
    if existing:
        progress(
            "the recorded lab is stale (some of its processes are gone, e.g. after a "
            "reboot); removing its leftovers first"
        )
        down(lab_dir, progress)
    preflight(lab_dir, len(plans))
    rootfs = ensure_rootfs(cache_dir, progress)
    mirror_root = cache_dir / "mirror"
    build_all(mirror_root)

    gateway = str(GATEWAY)
    state = LabState(
        cluster=CLUSTER,
        bridge=BRIDGE,
        gateway=gateway,
        ssh_key=str(lab_dir / "id_ed25519"),
        known_hosts=str(lab_dir / "known_hosts"),
        apt_proxy=f"http://{gateway}:{services.APT_PROXY_PORT}",
        mirror_url=f"http://{gateway}:{services.MIRROR_PORT}",
    )
    state.save(lab_dir)
    try:
        _bring_up(state, plans, rootfs, mirror_root, lab_dir, cache_dir, progress)
    except BaseException:
        progress("lab up failed; removing what was created")
        down(lab_dir, progress=lambda _: None)
        raise
    return state


def all_running(state: LabState) -> bool:
    """Whether every droplet and service the state records still runs."""
    pids = [d.pid for d in state.droplets] + list(state.services.values())
    return all(pid and system.pid_alive(pid) for pid in pids)


def _bring_up(
    state: LabState,
    plans: list[DropletPlan],
    rootfs: Path,
    mirror_root: Path,
    lab_dir: Path,
    cache_dir: Path,
    progress: Progress,
) -> None:
    system.create_bridge(state.bridge, state.gateway, NETWORK.prefixlen)
    state.save(lab_dir)
    progress(f"bridge {state.bridge} {state.gateway}/{NETWORK.prefixlen}")

    key = Path(state.ssh_key)
    key.unlink(missing_ok=True)
    key.with_suffix(".pub").unlink(missing_ok=True)
    system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "galley-lab", "-f", str(key)])

    logs = lab_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    _start_service(
        state,
        "apt-proxy",
        services.apt_proxy_command(lab_dir, cache_dir, state.gateway),
        (state.gateway, services.APT_PROXY_PORT),
        logs,
        lab_dir,
    )
    _start_service(
        state,
        "mirror",
        services.mirror_command(mirror_root, state.gateway),
        (state.gateway, services.MIRROR_PORT),
        logs,
        lab_dir,
    )
    _start_vault(state, lab_dir, logs)
    progress(
        f"apt proxy {state.apt_proxy}, artifact mirror {state.mirror_url}, vault {state.vault_addr}"
    )

    hosts = {plan.name: plan.address for plan in plans}
    public_key = key.with_suffix(".pub").read_text()
    known_hosts: list[str] = []
    for plan in plans:
        droplet = Droplet(name=plan.name, address=plan.address, roles=list(plan.roles))
        state.droplets.append(droplet)
        state.save(lab_dir)
        root = droplet_ops.prepare_root(
            droplet,
            rootfs,
            lab_dir,
            prefix=NETWORK.prefixlen,
            public_key=public_key,
            apt_proxy=state.apt_proxy,
            hosts=hosts,
        )
        droplet.root, droplet.mounted = str(root), True
        known_hosts += droplet_ops.host_key_lines(root, droplet.address)
        droplet.pid = droplet_ops.boot(droplet, root, state.bridge, logs)
        state.save(lab_dir)
    Path(state.known_hosts).write_text("\n".join(known_hosts) + "\n")
    progress(f"booting {len(plans)} droplets: {', '.join(hosts)}")

    with ThreadPoolExecutor(max_workers=len(state.droplets)) as pool:
        for future in [
            pool.submit(
                droplet_ops.wait_ready, d, state.ssh_key, state.known_hosts, logs / f"{d.name}.log"
            )
            for d in state.droplets
        ]:
            future.result()
    progress(f"lab up: {len(state.droplets)} droplets running")


def _start_service(
    state: LabState,
    name: str,
    command: list[str],
    listen: tuple[str, int],
    logs: Path,
    lab_dir: Path,
) -> None:
    pid = system.spawn(command, logs / f"{name}.log")
    state.services[name] = pid
    state.save(lab_dir)
    services.wait_listening(name, *listen, pid_alive=lambda: system.pid_alive(pid))


def _start_vault(state: LabState, lab_dir: Path, logs: Path) -> None:
    """A fresh OpenBao on https://127.0.0.1:8200, its data and root token file in the lab dir."""
    shutil.rmtree(lab_dir / VAULT_DIR, ignore_errors=True)
    vault = OpenBao.start(lab_dir / VAULT_DIR, services.VAULT_ADDRESS[1], log=logs / "vault.log")
    state.services["vault"] = vault.pid
    state.vault_addr = vault.addr
    state.vault_ca_cert = str(vault.ca_cert)
    state.vault_token_file = str(vault.token_file)
    state.save(lab_dir)


def down(lab_dir: Path = LAB_DIR, progress: Progress = print) -> None:
    """Remove exactly what `up` recorded (droplets, overlays, services, bridge, Vault's data,
    state).

    Safe to run again: without a recorded lab it only says so.
    """
    state = LabState.load(lab_dir)
    if state is None:
        progress("no lab is up")
        return
    with ThreadPoolExecutor(max_workers=max(1, len(state.droplets))) as pool:
        list(pool.map(_remove_droplet, state.droplets, [lab_dir] * len(state.droplets)))
    for pid in state.services.values():
        system.stop_process(pid)
    if state.bridge:
        system.delete_bridge(state.bridge)
    for leftover in ("id_ed25519", "id_ed25519.pub", "known_hosts"):
        (lab_dir / leftover).unlink(missing_ok=True)
    for directory in ("droplets", "apt-cacher-ng", VAULT_DIR):
        shutil.rmtree(lab_dir / directory, ignore_errors=True)
    remove_state(lab_dir)
    progress(
        f"lab down: removed {len(state.droplets)} droplets, "
        f"{len(state.services)} services and bridge {state.bridge or '(none)'}"
    )


def _remove_droplet(droplet: Droplet, lab_dir: Path) -> None:
    paths = droplet_ops.droplet_paths(lab_dir, droplet.name)
    if droplet.pid:
        system.stop_process(droplet.pid)
    # systemd-nspawn killed after its grace period leaves the droplet's init running, which
    # keeps its network namespace and veth: the next `up` could not create them again.
    system.kill_container_init(droplet.name)
    system.unmount(paths["root"])
    subprocess.run(["rm", "-rf", "--one-file-system", str(paths["base"])], check=False)


def status(lab_dir: Path = LAB_DIR) -> list[str]:
    """One line per droplet and service: name, address, roles, whether its process runs."""
    state = LabState.load(lab_dir)
    if state is None:
        return ["no lab is up"]
    lines = [
        f"{d.name:<16} {d.address:<14} {','.join(d.roles):<22} "
        f"{'running' if d.pid and system.pid_alive(d.pid) else 'STOPPED'}"
        for d in state.droplets
    ]
    lines += [
        f"{name:<16} {'pid ' + str(pid):<14} {'':<22} "
        f"{'running' if system.pid_alive(pid) else 'STOPPED'}"
        for name, pid in state.services.items()
    ]
    return lines
