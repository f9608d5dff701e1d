"""One validation layer for inventories, run by every deploy and by `galley validate`.

Every check reads inventory data (and the VAULT_* variables of the environment) only: nothing
here connects to a host or to Vault, so bad input is reported before any host is changed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from itertools import combinations

from pyinfra.api import Inventory
from pyinfra.api.host import Host

import galley.components as registry
from galley.components.host_firewall import ENABLED as FIREWALL_ENABLED
from galley.components.host_firewall import OPERATOR_CIDRS
from galley.components.kube_controller_manager import NODE_GRACE_SECONDS
from galley.components.kubelet import NODE_LEASE_DEFAULT_SECONDS as KUBELET_LEASE_DEFAULT
from galley.components.kubelet import NODE_LEASE_SECONDS
from galley.components.kubernetes import first_service_ip
from galley.components.model import (
    CERT_TTL_KEYS,
    CLUSTER_GROUPS,
    OPTIONAL_GROUPS,
    Artifact,
    Component,
)
from galley.components.renewal import INTERVAL as RENEWAL_INTERVAL
from galley.components.renewal import RANDOM_DELAY
from galley.downloads import ChecksumError, sha256_of
from galley.inventory.load import InventoryLoadError, contacting_hosts, load_inventory
from galley.lock import LEASE as LOCK_LEASE
from galley.lock import MIN_LEASE_SECONDS
from galley.problems import Problem
from galley.settings import Setting, span_seconds
from galley.vault.client import DATA_KEYS, VaultError, VaultSettings
from galley.vault.pki import parse_duration

LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SHA256 = re.compile(r"[0-9a-f]{64}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ValidationError(Exception):
    """The inventory has problems; str() lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


FLANNEL_MODES = ("kube", "etcd")
FLANNEL_BACKENDS = ("vxlan", "host-gw", "wireguard")

Check = Callable[[Host], Iterable[tuple[str, str]]]


def problems(
    inventory: Inventory,
    components: Iterable[str | Component],
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem that would stop deploying ``components`` (declarations, or component or
    phase names) to ``inventory``."""
    environ = os.environ if environ is None else environ
    components = list(components)
    names = [c for c in components if isinstance(c, str)]
    chosen = [c for c in components if isinstance(c, Component)]
    chosen += registry.select(names) if names else []
    found = inventory_problems(inventory)
    for component in chosen:
        hosts = _hosts_of(inventory, component)
        if component.group is not None:
            found += _group_size(component, hosts)
        for artifact in component.artifacts:
            found += _per_host(hosts, _checksum_check(artifact))
        for rule in component.checks:
            found += RULES[rule](inventory, component.group, hosts)
        if component.certs:
            found += _per_host(hosts, _vault_check(environ))
    return list(dict.fromkeys(found))


def check(
    inventory: Inventory, components: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """Raise ValidationError listing every problem, if there are any."""
    found = problems(inventory, components, environ)
    if found:
        raise ValidationError(found)


def validate_cli(inventory: Inventory, components: Iterable[str] = ()) -> int:
    """`galley validate`: print the problems (exit 1) or "OK: N hosts" (exit 0)."""
    chosen = registry.select(components) if components else list(registry.REGISTRY)
    found = problems(inventory, chosen)
    for problem in found:
        print(problem)
    if found:
        print(f"{len(found)} problem(s) in the inventory", file=sys.stderr)
        return 1
    print(f"OK: {len(inventory)} hosts")
    return 0


def inventory_problems(inventory: Inventory) -> list[Problem]:
    """The problems of the inventory itself, whatever is deployed: names, addresses, the
    cluster's settings and every component's declared settings (checked before pyinfra
    connects, see `checked`)."""
    found = _names(inventory) + _private_addresses(inventory)
    found += _per_host(_cluster_hosts(inventory), _settings_check)
    for component in registry.REGISTRY:
        hosts = _hosts_of(inventory, component)
        found += _per_host(hosts, _settings_declared(component.settings))
    found += _odd_members(inventory.get_group("etcd", []))
    found += _one_vault(_cluster_hosts(inventory))
    return list(dict.fromkeys(found))


def checked(groups: Mapping[str, list], inventory_file: str) -> Mapping[str, list]:
    """Return ``groups`` if the inventory in ``inventory_file`` (which defines them) is valid
    with its group data; otherwise stop, before pyinfra contacts any host, with one line per
    problem. Inventory modules end with ``... = checked(groups, __file__)``.

    The inventory is loaded again as pyinfra loads it (`load_inventory`, offline), in which
    load this check returns at once.
    """
    if not contacting_hosts():
        return groups
    try:
        inventory = load_inventory(inventory_file)
    except InventoryLoadError as exc:
        raise SystemExit(f"galley: {exc}") from None
    found = inventory_problems(inventory)
    if found:
        lines = "\n".join(str(problem) for problem in found)
        raise SystemExit(f"galley: the inventory is not valid, no host was contacted:\n{lines}")
    return groups


def _hosts_of(inventory: Inventory, component: Component) -> list[Host]:
    """The hosts of ``component``'s group (every cluster host for a component of all)."""
    if component.group is None:
        return _cluster_hosts(inventory)
    return inventory.get_group(component.group, [])


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
    if not hosts and group not in OPTIONAL_GROUPS:
        return [Problem(None, group, f"no hosts in group {group!r}")]
    return []


def _odd_members(hosts: list[Host], group: str = "etcd") -> list[Problem]:
    """Quorum: an odd member count unless ``<group>_allow_even_members``."""
    allow_even = f"{group}_allow_even_members"
    even = len(hosts) % 2 == 0
    if hosts and even and not all(host.data.get(allow_even) for host in hosts):
        message = (
            f"{len(hosts)} members: an even number adds no fault tolerance "
            f"(use an odd number, or set {allow_even} = True)"
        )
        return [Problem(None, group, message)]
    return []


def _one_vault(hosts: list[Host]) -> list[Problem]:
    """A run connects to Vault once, with the settings of whichever host it prepares first:
    every host must name the same cluster and the same Vault connection."""
    found = []
    for key in DATA_KEYS:
        values: dict[str, list[str]] = {}
        for host in hosts:
            values.setdefault(repr(host.data.get(key)), []).append(host.name)
        if len(values) > 1:
            which = "; ".join(f"{', '.join(names[:3])}: {value}" for value, names in values.items())
            found.append(
                Problem(None, key, f"hosts disagree ({which}): set it once, in group data")
            )
    return found


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


def _checksum_check(artifact: Artifact) -> Check:
    key, version_key, field = artifact.key, artifact.version_field, artifact.checksums_field

    def check(host: Host) -> Iterable[tuple[str, str]]:
        version = host.data.get(version_key)
        arch = host.data.get("arch")
        if not version:
            yield version_key, "missing"
        elif not isinstance(version, str):
            yield version_key, f"must be a string such as '1.2.3', not {version!r}"
            return
        if not arch:
            yield "arch", "missing"
        if not version or not arch:
            return
        try:
            digest = sha256_of(host.data, artifact.key, version, arch)
        except ChecksumError as exc:
            yield field, str(exc)
            return
        if digest is None:
            yield field, f"no sha256 for {key} {version} on {arch}"
        elif not SHA256.fullmatch(str(digest)):
            yield field, f"{key} {version} {arch}: {digest!r} is not a sha256"

    return check


DNS_NAME = re.compile(rf"{LABEL.pattern}(\.{LABEL.pattern})*")
ARCHES = ("amd64", "arm64")
PORTS = ("api_port", "etcd_client_port", "etcd_peer_port", "etcd_metrics_port")


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _settings_check(host: Host) -> Iterable[tuple[str, str]]:
    """Values that reach unit files, configs, commands and Vault roles: type and shape."""
    data = host.data
    cluster = data.get("cluster_name")
    if not isinstance(cluster, str) or not LABEL.fullmatch(cluster) or len(cluster) > 40:
        yield "cluster_name", f"{cluster!r} must be a DNS label of at most 40 characters"
    elif LABEL.fullmatch(host.name) and not host.name.startswith(f"{cluster}-"):
        yield (
            "name",
            f"does not fit the cluster's naming scheme {cluster}-*: the Vault roles would refuse "
            "to sign its certificates",
        )
    domain = data.get("cluster_domain")
    if domain is not None and not (isinstance(domain, str) and DNS_NAME.fullmatch(domain)):
        yield "cluster_domain", f"{domain!r} is not a DNS name"
    arch = data.get("arch")
    if arch is not None and arch not in ARCHES:
        yield "arch", f"{arch!r} is not one of {', '.join(ARCHES)}"
    for port in PORTS:
        value = data.get(port)
        if value is not None and not _is_port(value):
            yield port, f"must be a TCP port, not {value!r}"
    for ttl in CERT_TTL_KEYS:
        value = data.get(ttl)
        try:
            if value is not None and parse_duration(value) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            yield ttl, f"{value!r} is not a duration such as '720h'"
    if (problem := LOCK_LEASE.problem(data)) is not None:
        yield LOCK_LEASE.key, problem
    elif (span_seconds(LOCK_LEASE.of(data)) or 0) < MIN_LEASE_SECONDS:
        yield LOCK_LEASE.key, f"must be at least {MIN_LEASE_SECONDS}s (it is renewed every quarter)"
    stall = data.get("download_stall_seconds")
    if stall is not None and not (isinstance(stall, int) and not isinstance(stall, bool)):
        yield "download_stall_seconds", f"must be a number of seconds, not {stall!r}"
    elif stall is not None and stall < 1:
        yield "download_stall_seconds", f"must be at least 1, not {stall}"


def _settings_declared(settings: Iterable[Setting]) -> Check:
    """Each declared setting's value is of its kind (`galley.settings`)."""

    def check(host: Host) -> Iterable[tuple[str, str]]:
        for setting in settings:
            if (problem := setting.problem(host.data)) is not None:
                yield setting.key, problem

    return check


def _renewal_check(host: Host) -> Iterable[tuple[str, str]]:
    """The hosts' renewal timer, as deployed (its declared settings, defaults included), must
    come round well inside the last third of every TTL."""
    data = host.data
    spans = [span_seconds(setting.of(data)) for setting in (RENEWAL_INTERVAL, RANDOM_DELAY)]
    if None in spans:
        return  # the declared settings' check says why
    every = sum(span or 0 for span in spans)
    for ttl in CERT_TTL_KEYS:
        try:
            seconds = parse_duration(data.get(ttl))
        except (TypeError, ValueError):
            continue
        if every * 2 > seconds / 3:
            yield (
                RENEWAL_INTERVAL.key,
                f"a renewal every {every}s (interval plus random delay) leaves no second chance "
                f"in the last third of {ttl} {data.get(ttl)}",
            )


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


def _networks(inventory: Inventory, group: str, hosts: list[Host]) -> list[Problem]:
    return _per_host(hosts, _network_check)


def _api(inventory: Inventory, group: str, hosts: list[Host]) -> list[Problem]:
    return _control_plane_exists(inventory) + _per_host(hosts, _api_endpoint_check)


def _flannel(inventory: Inventory, group: str, hosts: list[Host]) -> list[Problem]:
    return _per_host(hosts, _flannel_check)


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


def _renewal(inventory: Inventory, group: str | None, hosts: list[Host]) -> list[Problem]:
    return _per_host(hosts, _renewal_check)


def _firewall_check(host: Host) -> Iterable[tuple[str, str]]:
    """A host firewall needs the networks the operators reach SSH and the API from."""
    if FIREWALL_ENABLED.of(host.data) is True and not OPERATOR_CIDRS.of(host.data):
        yield (
            OPERATOR_CIDRS.key,
            "missing: the networks SSH and the API are reached from, for the host firewall "
            "(or host_firewall = False)",
        )


def _firewall(inventory: Inventory, group: str | None, hosts: list[Host]) -> list[Problem]:
    return _per_host(hosts, _firewall_check)


def _node_grace(inventory: Inventory, group: str | None, hosts: list[Host]) -> list[Problem]:
    """The controller manager's grace period outlasts every kubelet's node lease: a shorter
    one marks healthy Nodes NotReady between two heartbeats."""
    leases = [
        NODE_LEASE_SECONDS.of(worker.data) or KUBELET_LEASE_DEFAULT
        for worker in inventory.get_group("workers", [])
    ]
    leases = [lease for lease in leases if NODE_LEASE_SECONDS.kind.accepts(lease)]
    found = []
    for host in hosts:
        grace = NODE_GRACE_SECONDS.of(host.data)
        if grace is None or not NODE_GRACE_SECONDS.kind.accepts(grace) or not leases:
            continue
        if grace <= max(leases):
            found.append(
                Problem(
                    host.name,
                    NODE_GRACE_SECONDS.key,
                    f"{grace} s must be longer than the kubelets' node lease ({max(leases)} s, "
                    "kubelet_node_lease_seconds): Nodes would go NotReady between heartbeats",
                )
            )
    return found


def _vault_check(environ: Mapping[str, str]) -> Check:
    def check(host: Host) -> Iterable[tuple[str, str]]:
        try:
            VaultSettings.from_data(host.data, environ)
        except VaultError as exc:
            yield "vault", str(exc)

    return check


# The rules a component's declaration may name in ``checks``.
RULES: Mapping[str, Callable[[Inventory, str | None, list[Host]], list[Problem]]] = {
    "networks": _networks,
    "api": _api,
    "flannel": _flannel,
    "renewal": _renewal,
    "firewall": _firewall,
    "node_grace": _node_grace,
}
