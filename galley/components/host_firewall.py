"""host-firewall: nftables on every host, rendered from the inventory's groups.

Every component declares what it listens on beyond loopback and who may connect (`Port`);
this one adds SSH from the operators and renders them, with the extra rules of group data,
into one nftables table (``inet galley``, `RULES_PATH`): inbound traffic is dropped unless it
belongs to a connection already made, comes from loopback, is ICMP, or reaches a declared
port from one of its sources (an inventory group's private addresses, or the operators' or
load balancers' CIDRs). Outbound and forwarded traffic (pods, NodePorts) pass untouched: the
DigitalOcean Cloud Firewall is the layer in front of NodePorts.

The table is applied whole and atomically (``nft -f``), and never locks the operator out:
the host arms a rollback to the rules it kept before (a transient systemd timer,
``firewall_rollback_seconds``), loads the new ones, and this machine opens a new SSH
connection to it. Only when that answers are the new rules kept (`KEPT_PATH`, loaded at boot
by ``galley-firewall.service``); when it does not, the host rolls back by itself and the run
stops naming it. A host whose live table no longer matches the kept one (flushed by hand) is
applied again by the next deploy.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from pyinfra.api import Inventory, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import python

from galley.components.engine import render_text, write
from galley.components.model import (
    CLUSTER_GROUPS,
    LOAD_BALANCERS,
    OPERATORS,
    Component,
    Config,
    Configured,
    Directory,
    Port,
    Unit,
)
from galley.facts.firewall import KEPT_PATH, LISTING_PATH, RULES_DIR, HostFirewall
from galley.host import observed
from galley.settings import CIDRS, COUNT, FLAG, Kind, Setting, is_network

RULES_PATH = f"{RULES_DIR}/rules.nft"  # rendered by the deploy; kept once confirmed
SCRIPT_PATH = "/usr/local/sbin/galley-firewall"
UNIT = "galley-firewall"
# Neither file restarts the unit: it only loads the kept rules at boot.
HOST_FIREWALL_CONFIG = Config(RULES_PATH, "host-firewall/rules.nft.j2", mode="600", watched=False)
SCRIPT_CONFIG = Config(
    SCRIPT_PATH, "host-firewall/galley-firewall.sh.j2", mode="755", watched=False
)


def _extra_rule(rule: object) -> bool:
    if not isinstance(rule, Mapping) or set(rule) - {"port", "protocol", "from", "on"}:
        return False
    port, sources, groups = rule.get("port"), rule.get("from"), rule.get("on", CLUSTER_GROUPS)
    return (
        isinstance(groups, list | tuple)
        and all(group in CLUSTER_GROUPS for group in groups)
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 < port < 65536
        and rule.get("protocol", "tcp") in ("tcp", "udp")
        and isinstance(sources, list | tuple)
        and bool(sources)
        and all(source in CLUSTER_GROUPS or is_network(source) for source in sources)
    )


EXTRA_RULES = Kind(
    "a list of rules such as {'port': 9100, 'protocol': 'tcp', 'from': ['control_plane', "
    "'10.0.0.0/8'], 'on': ['workers']} (from: inventory groups or networks; on: the groups "
    "whose hosts open it, default all)",
    lambda value: isinstance(value, list | tuple) and all(_extra_rule(r) for r in value),
)
ENABLED = Setting("host_firewall", True, FLAG)
# Where SSH and the API are reached from: the operators' machines, bastions, CI.
OPERATOR_CIDRS = Setting("firewall_operator_cidrs", None, CIDRS)
# The load balancers' source addresses (their health checks, the API behind api_endpoint).
LOAD_BALANCER_CIDRS = Setting("firewall_load_balancer_cidrs", [], CIDRS)
EXTRA = Setting("firewall_extra_rules", [], EXTRA_RULES)
ROLLBACK_SECONDS = Setting("firewall_rollback_seconds", 30, COUNT)
SSH = Port(lambda host: int(host.data.get("ssh_port") or 22), (OPERATORS,))
# How long this machine waits for a new SSH connection to a host after its new rules.
PROBE_SECONDS = 5


@dataclass(frozen=True)
class Rule:
    """One accept rule of a host's table: ``port``/``protocol`` from ``sources`` (addresses
    and networks), ``why`` naming who declared it."""

    port: int
    protocol: str
    sources: tuple[str, ...]
    why: str

    def lines(self) -> list[str]:
        """The rule in nftables syntax: one line per address family it has sources in."""
        found = []
        for family, version in (("ip", 4), ("ip6", 6)):
            chosen = [s for s in self.sources if ipaddress.ip_network(s).version == version]
            if chosen:
                found.append(
                    f"{family} saddr {{ {', '.join(chosen)} }} {self.protocol} dport {self.port} "
                    f'accept comment "{self.why}"'
                )
        return found


# Each inventory's groups as networks (a host's private address as a /32 or /128), read once:
# every host's rules name the same groups.
_GROUP_NETWORKS: WeakKeyDictionary[Inventory, dict[str, list[str]]] = WeakKeyDictionary()


def _group_networks(inventory: Inventory, group: str) -> list[str]:
    known = _GROUP_NETWORKS.setdefault(inventory, {})
    if group not in known:
        known[group] = [
            str(ipaddress.ip_network(h.data.private_ip)) for h in inventory.get_group(group, [])
        ]
    return known[group]


def sources_of(host: Host, names: Iterable[str]) -> list[str]:
    """The addresses and networks ``names`` stand for, seen from ``host``'s data: each
    group's hosts' private addresses, the operators' and load balancers' CIDRs, or a network
    itself."""
    found: list[str] = []
    for name in names:
        if name == OPERATORS:
            found += [_network_text(n) for n in OPERATOR_CIDRS.of(host.data) or []]
        elif name == LOAD_BALANCERS:
            found += [_network_text(n) for n in LOAD_BALANCER_CIDRS.of(host.data)]
        elif name in CLUSTER_GROUPS:
            found += _group_networks(host.inventory, name)
        else:
            found.append(_network_text(name))
    return list(dict.fromkeys(found))


def _network_text(network: str) -> str:
    return str(ipaddress.ip_network(network, strict=False))


def rules_of(host: Host, opened: Sequence[tuple[str, Port]]) -> list[Rule]:
    """The accept rules of ``host``: SSH, each ``(component, port)`` opened there, the extra
    rules of group data; one rule per port and protocol (sources merged), none for a port
    nobody may reach."""
    wanted: list[tuple[int, str, list[str], str]] = [
        (SSH.on(host), "tcp", sources_of(host, SSH.sources), "ssh")
    ]
    for name, port in opened:
        wanted.append((port.on(host), port.protocol, sources_of(host, port.sources), name))
    for rule in EXTRA.of(host.data):
        if not set(host.groups) & set(rule.get("on", CLUSTER_GROUPS)):
            continue
        sources = sources_of(host, rule["from"])
        wanted.append((rule["port"], rule.get("protocol", "tcp"), sources, "extra"))
    merged: dict[tuple[int, str], tuple[list[str], list[str]]] = {}
    for port, protocol, sources, why in wanted:
        known, whys = merged.setdefault((port, protocol), ([], []))
        known += [s for s in sources if s not in known]
        whys += [why] if why not in whys else []
    return [
        Rule(port, protocol, tuple(sorted(sources, key=_order)), ", ".join(whys))
        for (port, protocol), (sources, whys) in sorted(merged.items())
        if sources
    ]


def _order(network: str) -> tuple[int, Any]:
    parsed = ipaddress.ip_network(network)
    return parsed.version, parsed


def rules_text(host: Host, opened: Sequence[tuple[str, Port]]) -> str:
    """``host``'s whole table, as the deploy writes it to `RULES_PATH`."""
    lines = [line for rule in rules_of(host, opened) for line in rule.lines()]
    return render_text(
        HOST_FIREWALL_CONFIG, cluster_name=host.data.cluster_name, host=host.name, rules=lines
    )


def digest(text: str) -> str:
    """How the fact and the deploy compare rule sets."""
    return hashlib.sha256(text.encode()).hexdigest()


class FirewallError(Exception):
    """New rules cut this machine's SSH to a host (rolled back), or could not be kept."""


def ssh_answers(address: str, port: int, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a new TCP connection to ``address:port`` gets an SSH server's greeting."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as connection:
            connection.settimeout(timeout)
            return connection.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def confirm(state: State, host: Host, rollback_seconds: int) -> None:
    """Keep the rules just applied on ``host`` when a new SSH connection from this machine
    still gets through; otherwise wait out the host's own rollback and stop the run."""
    address = str(host.data.get("ssh_hostname") or host.name)
    port = SSH.on(host)
    if ssh_answers(address, port):
        ok, output = host.run_shell_command(f"{SCRIPT_PATH} confirm")
        if not ok:
            raise FirewallError(f"{host.name}: firewall rules not kept: {output.stderr.strip()}")
        return
    deadline = time.monotonic() + rollback_seconds + 2 * PROBE_SECONDS
    while not (back := ssh_answers(address, port)) and time.monotonic() < deadline:
        time.sleep(1)
    after = "it rolled back to its previous rules" if back else "it does not answer yet"
    raise FirewallError(
        f"{host.name}: the new firewall rules cut new SSH connections from this machine to "
        f"{address}:{port}; {after} (check {OPERATOR_CIDRS.key})"
    )


@operation()
def _apply(text_digest: str, rollback_seconds: int) -> Iterable[str]:
    """Load the rules with a rollback armed (`SCRIPT_PATH` apply)."""
    yield f"{SCRIPT_PATH} apply {text_digest} {rollback_seconds}"


def host_firewall(opened_on: Callable[[Host], list[tuple[str, Port]]]) -> Component:
    """The host-firewall component; ``opened_on`` gives the ``(component, port)`` pairs open
    on a host (the registry knows which components a host runs)."""

    def configure(host: Host, context: Mapping[str, Any]) -> Configured:
        text = rules_text(host, opened_on(host))
        rollback = int(ROLLBACK_SECONDS.of(host.data))
        script = render_text(
            SCRIPT_CONFIG,
            rules=RULES_PATH,
            kept=KEPT_PATH,
            listing=LISTING_PATH,
            unit=f"{UNIT}-rollback",
        )
        files = {
            SCRIPT_PATH: write(SCRIPT_CONFIG, script, f"{SCRIPT_PATH}"),
            RULES_PATH: write(HOST_FIREWALL_CONFIG, text, f"firewall rules {RULES_PATH}"),
        }
        found = observed.fact(HostFirewall)
        if found["kept"] != digest(text) or found["drift"]:
            _apply(
                name="firewall rules applied (a rollback armed)",
                text_digest=digest(text),
                rollback_seconds=rollback,
            )
            python.call(
                name="firewall rules kept (a new SSH connection still gets through)",
                function=confirm,
                rollback_seconds=rollback,
            )
        return Configured(files, {"script": SCRIPT_PATH})

    return Component(
        name="host-firewall",
        group=None,
        phase="",
        packages=("nftables",),
        configs=(HOST_FIREWALL_CONFIG, SCRIPT_CONFIG),
        unit=Unit(UNIT, "host-firewall/galley-firewall.service.j2"),
        directories=(Directory(RULES_DIR, "700"),),
        settings=(ENABLED, OPERATOR_CIDRS, LOAD_BALANCER_CIDRS, EXTRA, ROLLBACK_SECONDS),
        checks=("firewall",),
        configure=configure,
        reads=(HostFirewall,),
        when=lambda host: bool(ENABLED.of(host.data)),
    )
