"""The batch runner every day-2 operation shares: host work through pyinfra's API, on a
named batch of hosts at a time, and the etcd health gate.

Every batch gets a new ``State`` over the same ``Inventory`` with ``initial_limit`` set to the
batch and ``FAIL_PERCENT=0`` (pyinfra has no rolling deploy of its own; ``--serial`` visits
hosts in no fixed order); the hosts' operation order left by the previous State is cleared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.api.operations import run_ops

from galley.facts.etcd import EtcdHealth
from galley.host.ssh import disable_nagle


@dataclass
class HostOutcome:
    """What happened on one host: ``error`` None when all went well."""

    error: str | None = None
    health_wait: float = 0.0  # seconds spent waiting for the kubelet's /healthz
    healthy: bool = False  # the last step, the kubelet's /healthz, answered ok


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
