"""The batch runner every day-2 operation shares: host work through pyinfra's API, on a
named batch of hosts at a time, and the etcd health gate.

Every batch gets a new ``State`` over the same ``Inventory`` with ``initial_limit`` set to the
batch and ``FAIL_PERCENT=0`` (pyinfra has no rolling deploy of its own; ``--serial`` visits
hosts in no fixed order); the hosts' operation order left by the previous State is cleared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops

from galley.facts.etcd import EtcdHealth
from galley.host.ssh import disable_nagle


@dataclass
class HostOutcome:
    """What happened on one host: ``error`` None when all went well."""

    error: str | None = None
    health_wait: float = 0.0  # seconds spent waiting for the kubelet's /healthz
    healthy: bool = False  # the last step, the kubelet's /healthz, answered ok


@dataclass
class Connected:
    """Hosts connected outside a deploy: ``hosts`` by name, ``errors`` of those that were not."""

    hosts: dict[str, Host] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Batches:
    """Runs host work on batches of hosts of one ``inventory``."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def run(
        self,
        names: Iterable[str],
        function: Callable,
        before_run: Callable[[], None] = lambda: None,
        **kwargs,
    ) -> dict[str, HostOutcome]:
        """Run the deploy ``function`` (called with ``outcomes`` and ``kwargs``) on the hosts
        ``names`` only; ``before_run`` runs once everything is prepared, before any change.
        A host that did not report healthy gets an error naming why the run stopped."""
        outcomes = {name: HostOutcome() for name in names}
        hosts = [self.inventory.get_host(name) for name in outcomes]
        for each in self.inventory:
            # pyinfra 3.10 keeps each host's operation order on the Host; a new State
            # orders the operations of every host, including those of earlier batches.
            each.op_hash_order = []
        state = State(
            self.inventory, Config(FAIL_PERCENT=0, PARALLEL=len(hosts)), initial_limit=hosts
        )
        stopped = "pyinfra stopped"
        try:
            connect_all(state)
            disable_nagle(hosts)
            add_deploy(state, function, outcomes=outcomes, **kwargs)
            before_run()
            run_ops(state)
        except PyinfraError as exc:
            stopped = f"pyinfra: {exc}; see the errors above"
        finally:
            disconnect_all(state)
        for outcome in outcomes.values():
            if not outcome.healthy and outcome.error is None:
                outcome.error = f"the host work did not finish ({stopped})"
        return outcomes

    @contextmanager
    def connected(self, names: Iterable[str], connect_timeout: int = 10) -> Iterator[Connected]:
        """Connect to the hosts ``names`` (all at once) for commands outside a deploy
        (``host.run_shell_command``, ``host.get_fact``); a host that cannot be reached is in
        ``errors`` with why, not raised. All are disconnected on exit."""
        hosts = [self.inventory.get_host(name) for name in dict.fromkeys(names)]
        for each in self.inventory:
            each.op_hash_order = []  # as in `run`: a State of its own
        config = Config(CONNECT_TIMEOUT=connect_timeout, PARALLEL=len(hosts) or 1)
        state = State(self.inventory, config, initial_limit=hosts)
        found = Connected()

        def connect(host: Host) -> None:
            try:
                host.connect(show_errors=False, raise_exceptions=True)
            except ConnectError as exc:
                found.errors[host.name] = str(exc.args[0] if exc.args else exc)
                return
            state.activate_host(host)
            found.hosts[host.name] = host

        try:
            state.pool.map(connect, hosts)
            disable_nagle(found.hosts.values())
            yield found
        finally:
            for host in found.hosts.values():
                host.disconnect()

    def facts(self, names: Iterable[str], fact: type[FactBase], **kwargs) -> dict[str, Any]:
        """``fact`` (with ``kwargs``) of each host of ``names``, read in one new State; raises
        PyinfraError when a host cannot be reached."""
        hosts = [self.inventory.get_host(name) for name in names]
        state = State(self.inventory, Config(FAIL_PERCENT=0), initial_limit=hosts)
        try:
            connect_all(state)
            found = get_facts(state, fact, kwargs=kwargs)
        finally:
            disconnect_all(state)
        return {host.name: value for host, value in found.items()}

    def etcd_health(self) -> dict[str, tuple[bool, str]]:
        """Each etcd member's health (galley's EtcdHealth fact): (healthy, why not), the gate
        every operation checks before each batch."""
        members = [member.name for member in self.inventory.get_group("etcd", [])]
        try:
            facts = self.facts(members, EtcdHealth)
        except PyinfraError as exc:
            return {"(all)": (False, f"cannot reach the etcd members: {exc}")}
        return {
            name: (bool(found and found["healthy"]), (found or {}).get("error") or "")
            for name, found in facts.items()
        }
