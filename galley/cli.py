# ruff: noqa: E402 (the gevent patch must come before every other import)
"""The `galley` command: the lab, Vault bootstrap, validation, checksums, report, rollouts,
node removal, etcd member removal, snapshots and restores.

Every command that takes an inventory loads it first, in one place (`_with_inventory`): one
that does not load is one line and exit 2 before anything else. The commands exit 0 when
done, 1 when stopped or failed, 2 when refused before any change.
"""

from __future__ import annotations

# Like pyinfra's own CLI: patch the stdlib for gevent before anything imports ssl or socket
# (pyinfra connects through gevent; patching after ssl is imported breaks TLS clients).
from gevent import monkey

monkey.patch_all()

import argparse
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from pyinfra.api import Inventory

from galley.lock import LockError
from galley.vault.client import VaultError

Command = Callable[[argparse.Namespace], int]
# An inventory command: gets the inventory the command line names, loaded.
InventoryCommand = Callable[[Inventory, argparse.Namespace], int]


def _with_inventory(run: InventoryCommand) -> Command:
    """``run`` with ``args.inventory`` loaded first (None when the option is not given); an
    inventory that does not load is one line on stderr and exit 2, before anything else."""

    def command(args: argparse.Namespace) -> int:
        from galley.inventory.load import InventoryLoadError, load_inventory

        try:
            inventory = load_inventory(args.inventory) if args.inventory else None
        except InventoryLoadError as exc:
            print(f"galley: {exc}", file=sys.stderr)
            return 2
        return run(inventory, args)

    return command


def _lab(argv: list[str]) -> int:
    """``galley lab ...``: the lab's own command line, from a source checkout only."""
    try:
        from galley.lab.cli import main as lab_main
    except ImportError:
        print(
            "galley: error: the lab is not installed (it runs from a source checkout: "
            "scripts/bootstrap)",
            file=sys.stderr,
        )
        return 1
    return lab_main(argv)


def _first_host_data(inventory: Inventory) -> Any:
    """The first host's data; None (said on stderr) when the inventory has no hosts."""
    hosts = list(inventory)
    if not hosts:
        print("galley: the inventory has no hosts", file=sys.stderr)
        return None
    return hosts[0].data


def _vault_bootstrap(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops import vault_bootstrap
    from galley.vault.client import VaultSettings, connect

    data = _first_host_data(inventory)
    if data is None:
        return 2
    if (named := data.get("cluster_name")) != args.cluster:
        print(f"galley: the inventory is of cluster {named}, not {args.cluster}", file=sys.stderr)
        return 2
    settings = VaultSettings.from_data(data)
    changes = vault_bootstrap.bootstrap(connect(settings), settings.mount_prefix, inventory)
    for line in changes:
        print(line)
    print(f"vault: {len(changes)} change(s) for cluster {args.cluster} at {settings.addr}")
    return 0


def _admin_credentials(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.admin import admin_cli

    return admin_cli(inventory, args.break_glass)


def _lock_break(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.lock import break_lock, break_paths
    from galley.vault.client import VaultSettings, connect

    data = _first_host_data(inventory)
    if data is None:
        return 2
    client = connect(VaultSettings.from_data(data), break_paths(data.cluster_name))
    print(break_lock(client, data.cluster_name, force=args.force))
    return 0


def _validate(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.inventory.validate import validate_cli

    return validate_cli(inventory, args.components.split(",") if args.components else ())


def _report(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.report import report_cli

    return report_cli(inventory, args.days, args.json)


def _cloud_firewall(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.cloud_firewall import cloud_firewall_cli

    return cloud_firewall_cli(inventory, args.dry)


def _hostkeys_accept(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.inventory.hostkeys import accept_cli

    return accept_cli(inventory, args.name, args.fingerprint)


def _hostkeys_list(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.inventory.hostkeys import list_cli

    return list_cli(inventory)


def _checksums_fetch(inventory: Inventory | None, args: argparse.Namespace) -> int:
    from galley.checksums import fetch_cli

    return fetch_cli(args.kind, args.version, args.arch, inventory, args.catalogue)


def _rollout_kubelet(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.rollout import rollout_kubelet_cli

    return rollout_kubelet_cli(
        inventory,
        args.to,
        args.max_unavailable,
        args.dry_run,
        args.resume,
        args.drain_timeout,
        args.ready_timeout,
    )


def _rollout_control_plane(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.control_plane import rollout_control_plane_cli

    return rollout_control_plane_cli(
        inventory, args.to, args.dry_run, args.resume, args.allow_downgrade, args.ready_timeout
    )


def _etcd_snapshot(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.etcd_snapshot import snapshot_cli

    return snapshot_cli(inventory, args.out)


def _etcd_restore(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.etcd_restore import restore_cli

    return restore_cli(inventory, args.snapshot, args.yes, args.other_cluster)


def _node_remove(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.node_remove import node_remove_cli

    return node_remove_cli(inventory, args.name, args.unreachable, args.yes, args.drain_timeout)


def _etcd_remove(inventory: Inventory, args: argparse.Namespace) -> int:
    from galley.ops.etcd_remove import etcd_remove_cli

    return etcd_remove_cli(inventory, args.name, args.allow_even, args.yes, args.unreachable)


def version_line() -> str:
    """galley's version and those of the libraries and Python running it."""
    libraries = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("pyinfra", "hvac", "cryptography")
    )
    return f"galley {metadata.version('galley')} ({libraries}, Python {platform.python_version()})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galley", description=__doc__)
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True)

    # `galley lab ...` is handed to the lab's own command line (`main`); listed here for --help.
    commands.add_parser("lab", help="local lab of systemd-nspawn droplets (galley lab --help)")

    vault = commands.add_parser("vault", help="Vault PKI for a cluster").add_subparsers(
        dest="vault_command", required=True
    )
    bootstrap = vault.add_parser(
        "bootstrap", help="create the cluster's PKI mounts, CAs, roles and policies"
    )
    bootstrap.add_argument("--cluster", required=True, help="cluster name (mount prefix)")
    bootstrap.add_argument(
        "--inventory",
        required=True,
        help="the cluster's hosts (each gets roles of its own, and each job's policy exactly "
        "its hosts'), Vault's address and token, cluster_domain and the API endpoint's name",
    )
    bootstrap.set_defaults(func=_with_inventory(_vault_bootstrap))

    admin = commands.add_parser("admin", help="the operator's credentials").add_subparsers(
        dest="admin_command", required=True
    )
    credentials = admin.add_parser(
        "credentials",
        help="keep the admin kubeconfig current (with the operator's Vault token)",
    )
    credentials.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    credentials.add_argument(
        "--break-glass",
        action="store_true",
        help="also a 1-hour system:masters credential (break-glass.kubeconfig), and write the "
        "RBAC with it: a new cluster's admins binding, or RBAC to mend (the token needs the "
        "<cluster>-break-glass policy)",
    )
    credentials.set_defaults(func=_with_inventory(_admin_credentials))

    lock = commands.add_parser("lock", help="the cluster's one-operator lock").add_subparsers(
        dest="lock_command", required=True
    )
    breaking = lock.add_parser("break", help="free a lock whose holder is gone")
    breaking.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    breaking.add_argument(
        "--force", action="store_true", help="also break a lock whose lease is still live"
    )
    breaking.set_defaults(func=_with_inventory(_lock_break))

    validate = commands.add_parser("validate", help="check an inventory without connecting")
    validate.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    validate.add_argument("--components", help="comma-separated (default: all)")
    validate.set_defaults(func=_with_inventory(_validate))

    report = commands.add_parser(
        "report", help="versions, units, certificates and etcd health of every host"
    )
    report.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    report.add_argument(
        "--days",
        type=int,
        default=None,
        help="flag certificates expiring within N days (default: those with less than a "
        "sixth of their lifetime left, whose renewal at a third has failed for that long)",
    )
    report.add_argument("--json", action="store_true", help="one JSON document for scripts")
    report.set_defaults(func=_with_inventory(_report))

    cloud_firewall = commands.add_parser(
        "cloud-firewall",
        help="the host firewall's matrix as DigitalOcean Cloud Firewalls, one per group",
    )
    cloud_firewall.add_argument(
        "inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py"
    )
    cloud_firewall.add_argument(
        "--dry", action="store_true", help="name the changes, write nothing"
    )
    cloud_firewall.set_defaults(func=_with_inventory(_cloud_firewall))

    hostkeys = commands.add_parser(
        "hostkeys", help="SSH host keys pinned per droplet id"
    ).add_subparsers(dest="hostkeys_command", required=True)
    accept = hostkeys.add_parser("accept", help="pin the key a droplet offers now")
    accept.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    accept.add_argument("name", help="the droplet's name in the inventory")
    accept.add_argument(
        "--fingerprint", help="accept only if the droplet offers this key (SHA256:...)"
    )
    accept.set_defaults(func=_with_inventory(_hostkeys_accept))
    listing = hostkeys.add_parser("list", help="each droplet's id, address and pinned keys")
    listing.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    listing.set_defaults(func=_with_inventory(_hostkeys_list))

    checksums = commands.add_parser(
        "checksums", help="the download catalogue of artifact sha256"
    ).add_subparsers(dest="checksums_command", required=True)
    fetch = checksums.add_parser(
        "fetch", help="record upstream's published sha256 of a release in the catalogue"
    )
    fetch.add_argument(
        "kind", help="kubernetes (its server binaries), or an artifact key: etcd, containerd, ..."
    )
    fetch.add_argument("version", help="e.g. 1.33.6")
    fetch.add_argument(
        "--arch", action="append", help="architecture (repeatable; default: amd64 and arm64)"
    )
    fetch.add_argument(
        "--inventory", help="take the download base URLs and catalogue file from its group data"
    )
    fetch.add_argument("--catalogue", help="the catalogue file to record in")
    fetch.set_defaults(func=_with_inventory(_checksums_fetch))

    rollout = commands.add_parser("rollout", help="rolling upgrades").add_subparsers(
        dest="rollout_command", required=True
    )
    kubelet = rollout.add_parser(
        "kubelet", help="upgrade the workers' kubelet and kube-proxy, a batch at a time"
    )
    kubelet.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    kubelet.add_argument("--to", required=True, metavar="VERSION", help="target version")
    kubelet.add_argument(
        "--max-unavailable", default="1", metavar="N|P%", help="nodes upgraded at once (default 1)"
    )
    kubelet.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    kubelet.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted rollout, skipping finished nodes",
    )
    kubelet.add_argument("--drain-timeout", type=float, default=300, metavar="SECONDS")
    kubelet.add_argument("--ready-timeout", type=float, default=300, metavar="SECONDS")
    kubelet.set_defaults(func=_with_inventory(_rollout_kubelet))
    control_plane = rollout.add_parser(
        "control-plane",
        help="upgrade the apiservers, then the controller managers, then the schedulers, "
        "one host at a time",
    )
    control_plane.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    control_plane.add_argument("--to", required=True, metavar="VERSION", help="target version")
    control_plane.add_argument(
        "--dry-run", action="store_true", help="print the plan, change nothing"
    )
    control_plane.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted rollout, skipping finished hosts",
    )
    control_plane.add_argument(
        "--allow-downgrade", action="store_true", help="allow a target older than the apiservers"
    )
    control_plane.add_argument("--ready-timeout", type=float, default=300, metavar="SECONDS")
    control_plane.set_defaults(func=_with_inventory(_rollout_control_plane))

    etcd = commands.add_parser("etcd", help="etcd backups and membership").add_subparsers(
        dest="etcd_command", required=True
    )
    snapshot = etcd.add_parser(
        "snapshot", help="save a snapshot from a healthy follower and copy it to this machine"
    )
    snapshot.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    snapshot.add_argument(
        "--out", metavar="DIR", help="where to put it (default: ~/.config/galley/<cluster>/...)"
    )
    snapshot.set_defaults(func=_with_inventory(_etcd_snapshot))
    restore = etcd.add_parser(
        "restore", help="stop the control plane, restore every etcd member from a snapshot"
    )
    restore.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    restore.add_argument("snapshot", help="a snapshot file (a .sha256 beside it is checked)")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument(
        "--other-cluster",
        action="store_true",
        help="restore a snapshot that is not of this cluster (another identity, or none)",
    )
    restore.set_defaults(func=_with_inventory(_etcd_restore))
    etcd_remove = etcd.add_parser(
        "remove",
        help="take a member out of the etcd cluster (snapshot first), stop it and wipe its data",
    )
    etcd_remove.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    etcd_remove.add_argument(
        "name", help="the member (may still be in the etcd group; the others stay)"
    )
    etcd_remove.add_argument(
        "--allow-even",
        action="store_true",
        help="accept leaving an even number of voters (e.g. 5 -> 4 on the way to 3)",
    )
    etcd_remove.add_argument(
        "--unreachable",
        action="store_true",
        help="a dead droplet: skip the host steps (it may be gone from the inventory)",
    )
    etcd_remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    etcd_remove.set_defaults(func=_with_inventory(_etcd_remove))

    node = commands.add_parser("node", help="workers leaving the cluster").add_subparsers(
        dest="node_command", required=True
    )
    remove = node.add_parser(
        "remove",
        help="cordon, drain and delete a worker's Node, clean its host, revoke its certificates",
    )
    remove.add_argument("inventory", help="pyinfra inventory file, e.g. inventories/nyc3.py")
    remove.add_argument("name", help="the worker, still in the inventory's workers group")
    remove.add_argument(
        "--unreachable",
        action="store_true",
        help="a dead droplet: skip the host steps (it may be gone from the inventory)",
    )
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.add_argument("--drain-timeout", type=float, default=300, metavar="SECONDS")
    remove.set_defaults(func=_with_inventory(_node_remove))

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `galley` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["lab"]:
            return _lab(argv[1:])
        args = _parser().parse_args(argv)
        return args.func(args)
    except (VaultError, LockError) as exc:
        print(f"galley: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("galley: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
