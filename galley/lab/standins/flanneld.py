"""Stand-in for flanneld v0.26.7, lab/test only (stdlib only; no vxlan device is created).

Accepts flanneld's flags (Go ``flag`` package style: ``-name``/``--name``, ``=value`` or a
separate value), reads the network config from etcd (``<etcd-prefix>/config``) or, with
``--kube-subnet-mgr``, from ``--net-config-path``, picks this node's subnet deterministically
from the node's IP and writes the subnet lease file (``--subnet-file``) as flanneld does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

from . import files, serve
from .etcd import EtcdClient, EtcdError

VERSION = "v0.26.7"
# name -> takes a value (False: boolean)
FLAGS = {
    "etcd-endpoints": True,
    "etcd-prefix": True,
    "etcd-keyfile": True,
    "etcd-certfile": True,
    "etcd-cafile": True,
    "etcd-username": True,
    "etcd-password": True,
    "iface": True,
    "iface-regex": True,
    "iface-can-reach": True,
    "subnet-file": True,
    "public-ip": True,
    "public-ipv6": True,
    "subnet-lease-renew-margin": True,
    "ip-masq": False,
    "kube-subnet-mgr": False,
    "kube-api-url": True,
    "kube-annotation-prefix": True,
    "kubeconfig-file": True,
    "version": False,
    "healthz-ip": True,
    "healthz-port": True,
    "iptables-resync": True,
    "iptables-forward-rules": False,
    "net-config-path": True,
    "set-node-network-unavailable": False,
    "v": True,
    "vmodule": True,
    "log_backtrace_at": True,
}
DEFAULTS = {
    "etcd-endpoints": "http://127.0.0.1:4001,http://127.0.0.1:2379",
    "etcd-prefix": "/coreos.com/network",
    "subnet-file": "/run/flannel/subnet.env",
    "subnet-lease-renew-margin": "60",
    "healthz-ip": "0.0.0.0",
    "healthz-port": "0",
    "net-config-path": "/etc/kube-flannel/net-conf.json",
}
_BOOL = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}
# Overhead of each backend's encapsulation, subtracted from the interface MTU.
_OVERHEAD = {"vxlan": 50, "host-gw": 0, "udp": 28, "wireguard": 80, "ipip": 20}


class FlagError(Exception):
    """A command line the real flanneld rejects."""


def parse_flags(argv: list[str]) -> dict[str, object]:
    """Parse like Go's ``flag`` package; ``iface``/``iface-regex`` collect every value."""
    options: dict[str, object] = dict(DEFAULTS)
    options["iface"], options["iface-regex"] = [], []
    args = list(argv)
    while args and args[0].startswith("-") and args[0] not in ("-", "--"):
        name, has_value, value = args.pop(0).lstrip("-").partition("=")
        if name not in FLAGS:
            raise FlagError(f"flag provided but not defined: -{name}")
        if not FLAGS[name]:
            if has_value and value not in _BOOL:
                raise FlagError(f'invalid boolean value "{value}" for -{name}: parse error')
            options[name] = _BOOL[value] if has_value else True
            continue
        if not has_value:
            if not args:
                raise FlagError(f"flag needs an argument: -{name}")
            value = args.pop(0)
        if name in ("iface", "iface-regex"):
            options[name].append(value)  # type: ignore[union-attr]
        else:
            options[name] = value
    return options


def _node_ip(options: dict[str, object]) -> ipaddress.IPv4Address:
    """--public-ip, else the first --iface given as an IP or interface, else the default route's."""
    if options.get("public-ip"):
        return ipaddress.IPv4Address(str(options["public-ip"]))
    for iface in options["iface"]:  # type: ignore[union-attr]
        try:
            return ipaddress.IPv4Address(iface)
        except ValueError:
            shown = subprocess.run(
                ["ip", "-4", "-o", "addr", "show", "dev", iface],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if "inet" in shown:
                return ipaddress.IPv4Interface(shown[shown.index("inet") + 1]).ip
            raise FlagError(f"failed to find interface {iface}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.18.0.1", 9))  # no packet is sent: this only picks a route
        return ipaddress.IPv4Address(probe.getsockname()[0])


@dataclass(frozen=True)
class Lease:
    """The network config and this node's subnet in it."""

    network: ipaddress.IPv4Network
    subnet: ipaddress.IPv4Network
    backend: str


def choose_subnet(config: dict, node_ip: ipaddress.IPv4Address) -> Lease:
    """This node's subnet: the same node IP always gets the same subnet of ``Network``."""
    try:
        network = ipaddress.IPv4Network(config["Network"])
    except (KeyError, ValueError) as exc:
        raise FlagError(f"failed to parse network config: bad Network: {exc}") from None
    length = int(
        config.get("SubnetLen") or (24 if network.prefixlen < 24 else network.prefixlen + 2)
    )
    if length > 30 or length < network.prefixlen + 2:
        raise FlagError(f"failed to parse network config: invalid SubnetLen {length}")
    subnets = 2 ** (length - network.prefixlen)
    index = 1 + int(node_ip) % (subnets - 1)  # flannel never leases the first subnet
    subnet = ipaddress.IPv4Network(
        (int(network.network_address) + index * 2 ** (32 - length), length)
    )
    backend = str((config.get("Backend") or {}).get("Type", "udp"))
    if backend not in _OVERHEAD:
        raise FlagError(f"failed to create backend: unknown backend type: {backend}")
    return Lease(network, subnet, backend)


def write_subnet_file(path: str, lease: Lease, ip_masq: bool, mtu: int = 1500) -> None:
    """Write the lease file (FLANNEL_NETWORK, _SUBNET, _MTU, _IPMASQ) atomically."""
    directory, name = os.path.split(path)
    os.makedirs(directory or ".", mode=0o755, exist_ok=True)
    first = f"{lease.subnet.network_address + 1}/{lease.subnet.prefixlen}"
    temporary = os.path.join(directory, "." + name)
    with open(temporary, "w") as f:
        f.write(f"FLANNEL_NETWORK={lease.network}\nFLANNEL_SUBNET={first}\n")
        f.write(f"FLANNEL_MTU={mtu - _OVERHEAD[lease.backend]}\n")
        f.write(f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n")
    os.replace(temporary, path)


def _parse_config(data: bytes, source: str) -> dict:
    try:
        config = json.loads(data)
    except json.JSONDecodeError as exc:
        raise FlagError(f"failed to parse network config from {source}: {exc}") from None
    if not isinstance(config, dict):
        raise FlagError(f"failed to parse network config from {source}: not a JSON object")
    return config


def _etcd_config(options: dict[str, object], stop: threading.Event) -> dict:
    """Wait for ``<prefix>/config`` in etcd, as flanneld does."""
    tls = {
        name: str(options.get(f"etcd-{name}") or "") or None
        for name in ("cafile", "certfile", "keyfile")
    }
    if tls["certfile"] or tls["keyfile"]:
        files.check_pair(
            "-etcd-certfile", str(tls["certfile"]), "-etcd-keyfile", str(tls["keyfile"])
        )
    if tls["cafile"]:
        files.check_ca_bundle("-etcd-cafile", str(tls["cafile"]))
    endpoints = tuple(e for e in str(options["etcd-endpoints"]).split(",") if e)
    client = EtcdClient(endpoints, tls["cafile"], tls["certfile"], tls["keyfile"])
    key = str(options["etcd-prefix"]).rstrip("/") + "/config"
    while not stop.is_set():
        try:
            value = client.get(key)
        except EtcdError as exc:
            print(f"Couldn't fetch network config: {exc}", file=sys.stderr, flush=True)
        else:
            if value is not None:
                return _parse_config(value, f"etcd {key}")
            print(f"Couldn't fetch network config: {key} not found", file=sys.stderr, flush=True)
        stop.wait(1.0)
    raise SystemExit(0)


def _kube_config(options: dict[str, object]) -> dict:
    kubeconfig = str(options.get("kubeconfig-file") or "")
    if kubeconfig:
        files.check_kubeconfig("-kubeconfig-file", kubeconfig)
    elif not os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise FlagError(
            "failed to create kubernetes client: -kubeconfig-file is not set and not in a cluster"
        )
    path = str(options["net-config-path"])
    return _parse_config(files.read("-net-config-path", path), path)


def run(argv: list[str]) -> int:
    """Run the stand-in; returns the exit status (serves until SIGTERM)."""
    try:
        options = parse_flags(argv)
    except FlagError as exc:
        print(f"{exc}\nUsage: flanneld [OPTION]...", file=sys.stderr)
        return 2
    if options.get("version"):
        print(VERSION, file=sys.stderr)
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        port = int(str(options["healthz-port"]))
        if port > 0:
            route = lambda request: (200, "text/plain", b"flanneld is running")  # noqa: E731
            serve.start(str(options["healthz-ip"]), port, route)
        if options.get("kube-subnet-mgr"):
            config = _kube_config(options)
        else:
            config = _etcd_config(options, stop)
        lease = choose_subnet(config, _node_ip(options))
        write_subnet_file(str(options["subnet-file"]), lease, bool(options.get("ip-masq")))
    except (FlagError, files.FileProblem, OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(
        f"flanneld stand-in {VERSION}: lease {lease.subnet} written to {options['subnet-file']}",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(1.0):
        pass
    return 0


def main() -> None:
    """Entry point."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
