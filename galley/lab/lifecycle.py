"""`galley lab up | down | status`: bring the lab up, take exactly it down, describe it; and
`add | kill | start | replace | remove`: grow and break a running lab as a region grows and
breaks (one droplet more, a hardware fault, a replaced or deleted droplet).

Every fresh disk is a new simulated droplet id. The droplets `up` boots are admitted (their
keys pinned per id, `galley.inventory.hostkeys`): the lab made them. One that `add` or
`replace` boots is as new to galley as a new DigitalOcean droplet: a worker is trusted on
first use, an etcd or control-plane droplet waits for `galley hostkeys accept
inventories/lab.py NAME`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from galley.inventory import hostkeys
from galley.lab import cgroups, images, services, system
from galley.lab import droplets as droplet_ops
from galley.lab.artifacts import build_all
from galley.lab.openbao import OpenBao, bao_binary
from galley.lab.rootfs import ensure_rootfs
from galley.lab.state import CACHE_DIR, LAB_DIR, Droplet, LabState, remove_state
from galley.lab.system import LabError
from galley.lab.topology import BRIDGE, CLUSTER, GATEWAY, NETWORK, DropletPlan, plan_added

Progress = Callable[[str], None]
# The lab's OpenBao keeps its configuration, raft data, TLS files and credentials here.
VAULT_DIR = "openbao"


# inotify instances a converged droplet of each role holds (measured on 2026-12-07: etcd 7;
# control plane 15-16 and workers 16, the kubelet's and containerd's CRI watches among them;
# monitoring 14), plus the host's own; the kernel's per-user limit is shared by all
# containers (all run as root). Short of it, containerd's CRI plugin and the kubelet fail to
# start ("too many open files").
INOTIFY_PER_ROLE = {"etcd": 8, "control_plane": 17, "workers": 17, "monitoring": 15}
INOTIFY_SPARE = 16
INOTIFY_SYSCTL = "fs/inotify/max_user_instances"
INOTIFY_LIMIT = Path("/proc/sys") / INOTIFY_SYSCTL


def inotify_needed(roles: Iterable[Sequence[str]]) -> int:
    """The fs.inotify.max_user_instances a lab of droplets with these ``roles`` needs to run
    (a droplet of several roles counts as its largest)."""
    return INOTIFY_SPARE + sum(
        max((INOTIFY_PER_ROLE[role] for role in held), default=INOTIFY_PER_ROLE["etcd"])
        for held in roles
    )


def raise_inotify(roles: Sequence[Sequence[str]]) -> dict[str, str]:
    """Raise the kernel's inotify limit to what droplets with these ``roles`` need; return
    what it was (nothing when it was high enough), for `down` to put back."""
    if int(INOTIFY_LIMIT.read_text()) >= inotify_needed(roles):
        return {}
    return system.set_sysctls({INOTIFY_SYSCTL: str(inotify_needed(roles))})


def require_root() -> None:
    """Refuse anything that changes the lab unless run as root."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, mounts and a bridge): run it as root")


def preflight(lab_dir: Path) -> None:
    """Refuse to start when the machine cannot host the lab; nothing is created yet."""
    require_root()
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
    preflight(lab_dir)
    rootfs = ensure_rootfs(cache_dir, progress)
    mirror_root = cache_dir / "mirror"
    build_all(mirror_root, cache_dir / "sources")

    gateway = str(GATEWAY)
    state = LabState(
        cluster=CLUSTER,
        bridge=BRIDGE,
        gateway=gateway,
        ssh_key=str(lab_dir / "id_ed25519"),
        known_hosts=str(lab_dir / "known_hosts"),
        host_keys=str(lab_dir / "host-keys"),
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
    """Whether every droplet (but those killed on purpose) and service the state records
    still runs."""
    pids = [d.pid for d in state.droplets if not d.killed] + list(state.services.values())
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
    storage = cache_dir / "registry"
    _start_service(
        state,
        "registry",
        services.registry_command(lab_dir, storage, state.gateway),
        (state.gateway, services.REGISTRY_PORT),
        logs,
        lab_dir,
    )
    images.push_all(
        f"{state.gateway}:{services.REGISTRY_PORT}", storage, cache_dir / "sources", progress
    )
    _start_vault(state, lab_dir, logs)
    roles = [plan.roles for plan in plans]
    state.sysctls = system.set_sysctls(system.KUBELET_SYSCTLS) | raise_inotify(roles)
    state.save(lab_dir)
    progress(
        f"apt proxy {state.apt_proxy}, artifact mirror {state.mirror_url}, image registry "
        f"{state.gateway}:{services.REGISTRY_PORT}, vault {state.vault_addr}"
    )

    hosts = {plan.name: plan.address for plan in plans}
    Path(state.known_hosts).write_text("")
    for plan in plans:
        _boot(state, plan, rootfs, lab_dir, hosts, admit=True)
    progress(f"booting {len(plans)} droplets: {', '.join(hosts)}")
    _wait_ready(state, state.droplets, lab_dir)
    progress(f"lab up: {len(state.droplets)} droplets running")


def _boot(
    state: LabState,
    plan: DropletPlan,
    rootfs: Path,
    lab_dir: Path,
    hosts: dict[str, str],
    admit: bool,
) -> Droplet:
    """Prepare a fresh root for ``plan`` (a new droplet id, new host keys pinned in the lab's
    known_hosts, and per id when ``admit``) and boot it; recorded in ``state`` as it goes."""
    droplet = Droplet(name=plan.name, address=plan.address, roles=list(plan.roles))
    droplet.droplet_id, state.next_droplet_id = state.next_droplet_id, state.next_droplet_id + 1
    state.droplets.append(droplet)
    state.save(lab_dir)
    root = droplet_ops.prepare_root(
        droplet,
        rootfs,
        lab_dir,
        prefix=NETWORK.prefixlen,
        public_key=Path(state.ssh_key).with_suffix(".pub").read_text(),
        apt_proxy=state.apt_proxy,
        hosts=hosts,
    )
    droplet.root, droplet.mounted = str(root), True
    lines = droplet_ops.host_key_lines(root, droplet.address)
    _pin_host_keys(state, droplet.address, lines)
    if admit:
        admit_droplet(state, droplet, lines)
    droplet.pid = droplet_ops.boot(droplet, root, state.bridge, lab_dir / "logs")
    state.save(lab_dir)
    return droplet


def _pin_host_keys(state: LabState, address: str, lines: list[str]) -> None:
    """Replace the pinned host keys of ``address`` with ``lines`` (none: forget it)."""
    path = Path(state.known_hosts)
    kept = [
        line
        for line in (path.read_text().splitlines() if path.exists() else [])
        if line.split(" ", 1)[0] != address
    ]
    path.write_text("".join(f"{line}\n" for line in kept + lines))


def admit_droplet(state: LabState, droplet: Droplet, lines: list[str]) -> None:
    """Pin ``droplet``'s keys (known_hosts ``lines``) per its id and admit it."""
    store = Path(state.host_keys)
    keys = [hostkeys.HostKey(*line.split()[1:3]) for line in lines]
    hostkeys.write_keys(hostkeys.pin_file(store, droplet.droplet_id), droplet.address, 22, keys)
    hostkeys.admit(store, [droplet.droplet_id])


def _wait_ready(state: LabState, droplets: list[Droplet], lab_dir: Path) -> None:
    logs = lab_dir / "logs"
    with ThreadPoolExecutor(max_workers=max(1, len(droplets))) as pool:
        for future in [
            pool.submit(
                droplet_ops.wait_ready, d, state.ssh_key, state.known_hosts, logs / f"{d.name}.log"
            )
            for d in droplets
        ]:
            future.result()


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
    """A fresh OpenBao on https://127.0.0.1:8200 (and the bridge's address, for the
    droplets), its data and root token file in the lab dir."""
    shutil.rmtree(lab_dir / VAULT_DIR, ignore_errors=True)
    port = services.VAULT_ADDRESS[1]
    # The droplets renew their certificates themselves: the API listens on the bridge too.
    vault = OpenBao.start(lab_dir / VAULT_DIR, port, log=logs / "vault.log", also_on=state.gateway)
    state.services["vault"] = vault.pid
    state.vault_addr = vault.addr
    state.vault_host_addr = f"https://{state.gateway}:{port}"
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
    cgroups.remove_lab()
    for pid in state.services.values():
        system.stop_process(pid)
    system.set_sysctls(state.sysctls)
    if state.bridge:
        system.delete_bridge(state.bridge)
    for leftover in ("id_ed25519", "id_ed25519.pub", "known_hosts"):
        (lab_dir / leftover).unlink(missing_ok=True)
    for directory in ("droplets", "apt-cacher-ng", VAULT_DIR, "host-keys"):
        shutil.rmtree(lab_dir / directory, ignore_errors=True)
    remove_state(lab_dir)
    progress(
        f"lab down: removed {len(state.droplets)} droplets, "
        f"{len(state.services)} services and bridge {state.bridge or '(none)'}"
    )


def _remove_droplet(droplet: Droplet, lab_dir: Path) -> None:
    paths = droplet_ops.droplet_paths(lab_dir, droplet.name)
    # Nothing of it is kept: its init gets SIGKILL (and every process of the droplet with it),
    # then systemd-nspawn finds its machine gone and cleans up after it. (Asked to stop first,
    # a droplet running pods and an apiserver took longer than nspawn's grace, and an nspawn
    # killed for it left its /run/systemd/nspawn/propagate/<droplet> behind, which the next
    # nspawn of that name refuses to remove.)
    system.kill_container_init(droplet.name)
    if droplet.pid:
        system.stop_process(droplet.pid)
    droplet_ops.clear_leftovers(droplet.name)
    cgroups.remove(droplet.name)
    system.unmount(paths["root"])
    subprocess.run(["rm", "-rf", "--one-file-system", str(paths["base"])], check=False)


def status(lab_dir: Path = LAB_DIR) -> list[str]:
    """One line per droplet and service: name, address, roles, whether its process runs."""
    state = LabState.load(lab_dir)
    if state is None:
        return ["no lab is up"]
    lines = [
        f"{d.name:<16} {d.address:<14} {','.join(d.roles):<22} {_droplet_state(d)}"
        for d in state.droplets
    ]
    lines += [
        f"{name:<16} {'pid ' + str(pid):<14} {'':<22} "
        f"{'running' if system.pid_alive(pid) else 'STOPPED'}"
        for name, pid in state.services.items()
    ]
    return lines


def _droplet_state(droplet: Droplet) -> str:
    if droplet.killed:
        return "KILLED"
    return "running" if droplet.pid and system.pid_alive(droplet.pid) else "STOPPED"


def _recorded_lab(lab_dir: Path) -> LabState:
    state = LabState.load(lab_dir)
    if state is None:
        raise LabError("no lab is up: run `galley lab up` first")
    return state


def _running_lab(lab_dir: Path) -> LabState:
    state = _recorded_lab(lab_dir)
    if not all_running(state):
        raise LabError("the lab is stale (some of its processes are gone): `galley lab up` again")
    return state


def add(
    group: str,
    name: str | None = None,
    lab_dir: Path = LAB_DIR,
    cache_dir: Path = CACHE_DIR,
    progress: Progress = print,
) -> Droplet:
    """Boot one more droplet in ``group`` (``etcd``, ``control_plane``, ``workers``) on the
    running lab: the next free name and address, fresh host keys, an empty disk."""
    state = _running_lab(lab_dir)
    plan = plan_added({d.name: d.address for d in state.droplets}, group, name)
    state.sysctls = raise_inotify([*(d.roles for d in state.droplets), plan.roles]) | state.sysctls
    rootfs = ensure_rootfs(cache_dir, progress)
    hosts = {d.name: d.address for d in state.droplets} | {plan.name: plan.address}
    droplet = _boot(state, plan, rootfs, lab_dir, hosts, admit=False)
    for other in state.droplets:
        if other is not droplet and other.root:
            with open(Path(other.root) / "etc/hosts", "a") as etc_hosts:
                etc_hosts.write(f"{plan.address} {plan.name}\n")
    _wait_ready(state, [droplet], lab_dir)
    progress(f"added {plan.name} ({plan.address}, {group}, droplet id {droplet.droplet_id})")
    return droplet


def kill(name: str, lab_dir: Path = LAB_DIR, progress: Progress = print) -> None:
    """Stop droplet ``name`` abruptly, as a hardware fault would: every process in it gets
    SIGKILL at once, nothing shuts down cleanly; its disk is kept (`start` boots it again)."""
    state = _running_lab(lab_dir)
    droplet = _droplet(state, name)
    # SIGKILL to the droplet's init takes every process in it down at once; systemd-nspawn
    # then has nothing left to shut down.
    system.kill_container_init(droplet.name)
    if droplet.pid:
        system.stop_process(droplet.pid)
    droplet.pid, droplet.killed = None, True
    state.save(lab_dir)
    progress(f"killed {name} (disk kept)")


def start(name: str, lab_dir: Path = LAB_DIR, progress: Progress = print) -> None:
    """Boot a killed droplet again from its kept disk (the same host keys and data)."""
    state = _recorded_lab(lab_dir)
    droplet = _droplet(state, name)
    if not droplet.killed:
        raise LabError(f"{name} is not killed; nothing to start")
    droplet.pid = droplet_ops.boot(droplet, Path(droplet.root), state.bridge, lab_dir / "logs")
    droplet.killed = False
    state.save(lab_dir)
    _wait_ready(state, [droplet], lab_dir)
    progress(f"started {name}")


def remove(name: str, lab_dir: Path = LAB_DIR, progress: Progress = print) -> Droplet:
    """Delete droplet ``name``: its processes, disk and pinned host keys are gone."""
    state = _recorded_lab(lab_dir)
    droplet = _droplet(state, name)
    _remove_droplet(droplet, lab_dir)
    _pin_host_keys(state, droplet.address, [])
    state.droplets.remove(droplet)
    state.save(lab_dir)
    progress(f"removed {name}")
    return droplet


def replace(
    name: str, lab_dir: Path = LAB_DIR, cache_dir: Path = CACHE_DIR, progress: Progress = print
) -> Droplet:
    """Destroy droplet ``name`` and boot a fresh one with the same name, address and roles:
    new host keys, an empty disk."""
    old = remove(name, lab_dir, progress=lambda _: None)
    state = _running_lab(lab_dir)
    plan = DropletPlan(name=old.name, address=old.address, roles=tuple(old.roles))
    hosts = {d.name: d.address for d in state.droplets} | {plan.name: plan.address}
    rootfs = ensure_rootfs(cache_dir, progress)
    droplet = _boot(state, plan, rootfs, lab_dir, hosts, admit=False)
    _wait_ready(state, [droplet], lab_dir)
    progress(
        f"replaced {name} ({old.address}): droplet id {old.droplet_id} -> {droplet.droplet_id}, "
        "new host keys, empty disk"
    )
    return droplet


def _droplet(state: LabState, name: str) -> Droplet:
    try:
        return state.droplet(name)
    except KeyError as exc:
        raise LabError(str(exc.args[0])) from None
