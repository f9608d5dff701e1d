"""One validation layer for inventories, run by every deploy and by `galley validate`.

Every check reads inventory data (and the VAULT_* variables of the environment) only: nothing
here connects to a host or to Vault, so bad input is reported before any host is changed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from pyinfra.api import Inventory, State
from pyinfra.api.host import Host
from pyinfra.context import ctx_state

from galley.hostkeys import unchecked
from galley.vault import VaultError, VaultSettings

CLUSTER_GROUPS = ("etcd", "control_plane", "workers")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SHA256 = re.compile(r"[0-9a-f]{64}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Problem:
    """One problem: `host` None means the inventory as a whole (or every host in scope)."""

    host: str | None
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.host or 'inventory'}: {self.field}: {self.message}"


class ValidationError(Exception):
    """The inventory has problems; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


@dataclass(frozen=True)
class Component:
    """What deploying a component needs from the inventory."""

    group: str  # the hosts that run it: must not be empty
    binaries: tuple[str, ...] = ()  # each needs <name>_version and <name>_checksums
    # binaries whose version is another key, e.g. {"kubelet": "kubernetes_version"}
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    odd_members: bool = False  # quorum: an odd member count unless <group>_allow_even_members
    networks: bool = False  # pod_cidr, service_cidr, node_cidrs, node_cidr_mask_size
    vault: bool = False  # certificates come from Vault
    kubernetes: bool = False  # needs a control plane to talk to (api_endpoint, api_port)
    flannel: bool = False  # flannel_mode and flannel_backend


def _kubernetes_versions(*binaries: str) -> dict[str, str]:
    return dict.fromkeys(binaries, "kubernetes_version")


COMPONENTS: Mapping[str, Component] = {
    "etcd": Component("etcd", binaries=("etcd",), odd_members=True, vault=True),
    "control_plane": Component(
        "control_plane",
        binaries=("kube_apiserver", "kube_controller_manager", "kube_scheduler"),
        versions=_kubernetes_versions(
            "kube_apiserver", "kube_controller_manager", "kube_scheduler"
        ),
        networks=True,
        vault=True,
        kubernetes=True,
    ),
    "workers": Component(
        "workers",
        binaries=("kubelet", "kube_proxy", "containerd", "runc", "cni_plugins"),
        versions=_kubernetes_versions("kubelet", "kube_proxy"),
        networks=True,
        vault=True,
        kubernetes=True,
    ),
    "flannel": Component(
        "workers",
        binaries=("flannel", "flannel_cni_plugin"),
        networks=True,
        vault=True,
        kubernetes=True,
        flannel=True,
    ),
}
FLANNEL_MODES = ("kube", "etcd")
FLANNEL_BACKENDS = ("vxlan", "host-gw", "wireguard")

Check = Callable[[Host], Iterable[tuple[str, str]]]


def problems(
    inventory: Inventory,
    components: Iterable[str],
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem that would stop deploying `components` to `inventory`."""
    environ = os.environ if environ is None else environ
    chosen = _components(components)
    found = _names(inventory) + _private_addresses(inventory)
    for component in chosen:
        hosts = inventory.get_group(component.group, [])
        found += _group_size(component, hosts)
        for binary in component.binaries:
            version_key = component.versions.get(binary, f"{binary}_version")
            found += _per_host(hosts, _checksum_check(binary, version_key))
        if component.networks:
            found += _per_host(hosts, _network_check)
        if component.kubernetes:
            found += _control_plane_exists(inventory)
            found += _per_host(hosts, _api_endpoint_check)
        if component.flannel:
            found += _per_host(hosts, _flannel_check)
        if component.vault:
            found += _per_host(hosts, _vault_check(environ))
    return list(dict.fromkeys(found))


def check(
    inventory: Inventory, components: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """Raise ValidationError listing every problem, if there are any."""
    found = problems(inventory, components, environ)
    if found:
        raise ValidationError(found)


def first_service_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first address of the service network (the `kubernetes` service's ClusterIP)."""
    network = ipaddress.ip_network(service_cidr)
    if network.num_addresses < 2:
        raise ValueError(f"{network} has no room for the first service IP")
    return network.network_address + 1


def load_inventory(inventory_path: str) -> Inventory:
    """Load an inventory file as the pyinfra CLI does (with group_data), without connecting."""
    # Imported here: importing pyinfra_cli monkey-patches the stdlib for gevent, too late to
    # matter here (nothing connects) and gevent warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyinfra_cli.inventory import make_inventory

    if not Path(inventory_path).is_file():
        raise FileNotFoundError(f"no such inventory file: {inventory_path}")
    with ctx_state.use(State()), unchecked():
        return make_inventory(inventory_path, cwd=os.getcwd())


def validate_cli(inventory_path: str, components: Iterable[str] = tuple(COMPONENTS)) -> int:
    """`galley validate`: print the problems (exit 1) or "OK: N hosts" (exit 0); 2 if unloadable."""
    try:
        chosen = list(components)
        _components(chosen)
        inventory = load_inventory(inventory_path)
    except Exception as exc:  # any failure while loading user code is reported the same way
        print(f"galley: cannot validate {inventory_path}: {exc}", file=sys.stderr)
        return 2
    found = problems(inventory, chosen)
    for problem in found:
        print(problem)
    if found:
        print(f"{len(found)} problem(s) in {inventory_path}", file=sys.stderr)
        return 1
    print(f"OK: {len(inventory)} hosts")
    return 0


def _components(names: Iterable[str]) -> list[Component]:
    names = list(names)
    unknown = [name for name in names if name not in COMPONENTS]
    if unknown:
        raise ValueError(
            f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}"
        )
    return [COMPONENTS[name] for name in names]


def _cluster_hosts(inventory: Inventory) -> list[Host]:
    return [host for host in inventory if set(CLUSTER_GROUPS) & set(host.groups)]


def _names(inventory: Inventory) -> list[Problem]:
    found = []
    for host in inventory:
        if not LABEL.fullmatch(host.name):
            found.append(
                Problem(host.name, "name", "not an RFC 1123 label (a-z, 0-9, '-', at most 63)")
            )
        node_name = host.data.get("node_name")
        if node_name is not None and node_name != host.name:
            found.append(
                Problem(host.name, "node_name", f"{node_name!r} differs from the host name")
            )
    return found


def _private_addresses(inventory: Inventory) -> list[Problem]:
    found = []
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for host in _cluster_hosts(inventory):
        value = host.data.get("private_ip")
        if not value:
            found.append(Problem(host.name, "private_ip", "missing (needed by cluster hosts)"))
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            found.append(Problem(host.name, "private_ip", f"{value!r} is not an IP address"))
            continue
        if address in owners:
            found.append(
                Problem(host.name, "private_ip", f"{address} is also used by {owners[address]}")
            )
        owners.setdefault(address, host.name)
    return found


def _group_size(component: Component, hosts: list[Host]) -> list[Problem]:
    group = component.group
    if not hosts:
        return [Problem(None, group, f"no hosts in group {group!r}")]
    allow_even = f"{group}_allow_even_members"
    even = component.odd_members and len(hosts) % 2 == 0
    if even and not all(host.data.get(allow_even) for host in hosts):
        message = (
            f"{len(hosts)} members: an even number adds no fault tolerance "
            f"(use an odd number, or set {allow_even} = True)"
        )
        return [Problem(None, group, message)]
    return []


def _per_host(hosts: list[Host], check: Check) -> list[Problem]:
    """Run `check` on each host; a problem every host shares is reported once, for all."""
    names: dict[tuple[str, str], list[str]] = {}
    for host in hosts:
        for field, message in check(host):
            names.setdefault((field, message), []).append(host.name)
    found = []
    for (field, message), hit in names.items():
        shared = len(hosts) > 1 and len(hit) == len(hosts)
        found += (
            [Problem(None, field, message)]
            if shared
            else [Problem(name, field, message) for name in hit]
        )
    return found


def _checksum_check(binary: str, version_key: str) -> Check:
    def check(host: Host) -> Iterable[tuple[str, str]]:
        version = host.data.get(version_key)
        arch = host.data.get("arch")
        checksums = host.data.get(f"{binary}_checksums") or {}
        if not version:
            yield version_key, "missing"
        if not arch:
            yield "arch", "missing"
        if not version or not arch:
            return
        digest = checksums.get(version, {}).get(arch) if isinstance(checksums, Mapping) else None
        if digest is None:
            yield f"{binary}_checksums", f"no sha256 for {binary} {version} on {arch}"
        elif not SHA256.fullmatch(str(digest)):
            yield f"{binary}_checksums", f"{binary} {version} {arch}: {digest!r} is not a sha256"

    return check


def _network_check(host: Host) -> Iterable[tuple[str, str]]:
    networks: list[tuple[str, Network]] = []
    for field in ("pod_cidr", "service_cidr", "node_cidrs"):
        value = host.data.get(field)
        if not value:
            yield field, "missing"
            continue
        if field == "node_cidrs" and not isinstance(value, list | tuple):
            yield field, f"must be a list of networks, not {value!r}"
            continue
        for text in value if field == "node_cidrs" else [value]:
            try:
                networks.append((field, ipaddress.ip_network(text)))
            except (TypeError, ValueError) as exc:
                yield field, f"{text!r} is not a network: {exc}"
    for (field, a), (other, b) in combinations(networks, 2):
        if a.version == b.version and a.overlaps(b):
            yield field, f"{a} overlaps {other} {b}"
    for field, network in networks:
        if field == "service_cidr":
            try:
                first_service_ip(str(network))
            except ValueError as exc:
                yield field, str(exc)
        if field == "pod_cidr":
            yield from _node_mask_check(host, network)


def _node_mask_check(host: Host, pod_network: Network) -> Iterable[tuple[str, str]]:
    mask = host.data.get("node_cidr_mask_size")
    if not isinstance(mask, int) or isinstance(mask, bool):
        yield "node_cidr_mask_size", f"must be a prefix length, not {mask!r}"
    elif not pod_network.prefixlen < mask <= pod_network.max_prefixlen - 2:
        yield (
            "node_cidr_mask_size",
            f"/{mask} does not split pod_cidr {pod_network} into node subnets (use a prefix "
            f"longer than /{pod_network.prefixlen} and at most /{pod_network.max_prefixlen - 2})",
        )


def _control_plane_exists(inventory: Inventory) -> list[Problem]:
    if inventory.get_group("control_plane", []):
        return []
    # The same problem as an empty control_plane component, so it is reported once.
    return [Problem(None, "control_plane", "no hosts in group 'control_plane'")]


def _api_endpoint_check(host: Host) -> Iterable[tuple[str, str]]:
    endpoint = host.data.get("api_endpoint")
    port = host.data.get("api_port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        yield "api_port", f"must be a TCP port, not {port!r}"
    if not endpoint:
        return
    try:
        ipaddress.ip_address(endpoint)
        return
    except ValueError:
        pass
    cluster = host.data.get("cluster_name")
    if not re.fullmatch(rf"api\.{re.escape(str(cluster))}(\.{LABEL.pattern})+", str(endpoint)):
        yield (
            "api_endpoint",
            f"{endpoint!r} must be an IP address or a name api.{cluster}.<domain> (the names "
            "the apiserver certificate may carry)",
        )


def _flannel_check(host: Host) -> Iterable[tuple[str, str]]:
    mode = host.data.get("flannel_mode")
    if mode not in FLANNEL_MODES:
        yield "flannel_mode", f"{mode!r} is not one of {', '.join(FLANNEL_MODES)}"
    backend = host.data.get("flannel_backend")
    kind = backend.get("Type") if isinstance(backend, Mapping) else None
    if kind not in FLANNEL_BACKENDS:
        yield (
            "flannel_backend",
            f"Type {kind!r} is not one of {', '.join(FLANNEL_BACKENDS)} (e.g. {{'Type': 'vxlan'}})",
        )


def _vault_check(environ: Mapping[str, str]) -> Check:
    def check(host: Host) -> Iterable[tuple[str, str]]:
        try:
            VaultSettings.from_data(host.data, environ)
        except VaultError as exc:
            yield "vault", str(exc)

    return check
