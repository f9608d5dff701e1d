"""The host side of a kubelet rollout, through pyinfra's API: one batch at a time.

Every batch gets a new ``State`` over the same ``Inventory`` with ``initial_limit`` set to the
batch and ``FAIL_PERCENT=0`` (pyinfra has no rolling deploy of its own; ``--serial`` visits
hosts in no fixed order); the hosts' operation order left by the previous State is cleared.
On each host: install kubelet and kube-proxy of the target version next to the running ones
(checksum verified before anything is unpacked, `galley.host.release`), switch ``current``, restart
both units and wait for the kubelet's local ``/healthz``. A rollback switches back to versions
that are still on disk and does the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gevent
from pyinfra import host
from pyinfra.api import Config, Inventory, State, deploy
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.operations import python

from galley.components.engine import install_artifact
from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.facts.etcd import EtcdHealth
from galley.facts.release import InstalledReleases
from galley.host.release import switch_release
from galley.host.restarts import systemctl_restart
from galley.host.ssh import disable_nagle

# What a node rollout installs side by side and switches: the kubelet and kube-proxy.
ARTIFACTS = (*KUBELET.artifacts, *KUBE_PROXY.artifacts)
# kubeletconfig healthzBindAddress/healthzPort as templates/kubelet-config.yaml.j2 sets them.
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
Versions = dict[str, str | None]  # binary -> version


@dataclass
class HostOutcome:
    """What happened on one host: ``error`` None when all went well."""

    error: str | None = None
    health_wait: float = 0.0  # seconds spent waiting for the kubelet's /healthz
    healthy: bool = False  # the last step, the kubelet's /healthz, answered ok


def _wait_healthy(
    state: State, host: Host, timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    """Poll the kubelet's /healthz; a timeout is recorded in ``outcomes`` (the rollout's
    verdict), not raised: nothing runs after this on the host."""
    started = time.monotonic()
    command = f"curl -fsS --max-time 2 {KUBELET_HEALTHZ}"
    while True:
        ok, output = host.run_shell_command(command)
        outcomes[host.name].health_wait = time.monotonic() - started
        if ok:
            outcomes[host.name].healthy = True
            return
        if time.monotonic() - started >= timeout:
            detail = " ".join(output.stderr_lines[-1:]) if output else ""
            message = f"kubelet not healthy after {timeout:.0f}s ({detail or 'no answer'})"
            outcomes[host.name].error = message
            host.log(message)
            return
        gevent.sleep(1)


def _restart_and_wait(timeout: float, outcomes: dict[str, HostOutcome]) -> None:
    for unit in host.loop(("kube-proxy", "kubelet")):
        python.call(name=f"Restart {unit}", function=systemctl_restart, unit=unit)
    python.call(
        name="Wait for the kubelet to be healthy",
        function=_wait_healthy,
        timeout=timeout,
        outcomes=outcomes,
    )


@deploy("Upgrade kubelet and kube-proxy")
def _upgrade(
    previous: dict[str, Versions], timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    previous[host.name] = {
        artifact.release: host.get_fact(InstalledReleases, release=artifact.release)["current"]
        for artifact in ARTIFACTS
    }
    for artifact in host.loop(ARTIFACTS):
        install_artifact(artifact, host.data)
    _restart_and_wait(timeout, outcomes)


@deploy("Roll back kubelet and kube-proxy")
def _rollback(
    versions: dict[str, Versions], timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    for artifact in host.loop(ARTIFACTS):
        switch_release(artifact.release, versions[host.name][artifact.release], artifact.binaries)
    _restart_and_wait(timeout, outcomes)


class PyinfraHosts:
    """Runs the host work of a rollout on named hosts of ``inventory``.

    The workers' ``kubernetes_version`` must already be the target (see `target_version`).
    """

    def __init__(self, inventory: Inventory, health_timeout: float) -> None:
        self.inventory = inventory
        self.health_timeout = health_timeout

    def _run(
        self,
        names: Iterable[str],
        function: Callable,
        before_run: Callable[[], None] = lambda: None,
        **kwargs,
    ) -> dict[str, HostOutcome]:
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
            add_deploy(state, function, timeout=self.health_timeout, outcomes=outcomes, **kwargs)
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

    def upgrade(
        self, names: list[str], record: Callable[[dict[str, Versions]], None]
    ) -> dict[str, HostOutcome]:
        """Install, switch, restart and wait on ``names``; ``record`` gets the versions that
        were active before (binary -> version) once known, before anything changes."""
        previous: dict[str, Versions] = {}
        return self._run(names, _upgrade, lambda: record(previous), previous=previous)

    def rollback(self, versions: dict[str, Versions]) -> dict[str, HostOutcome]:
        """Switch each host back to ``versions[host]``, restart and wait."""
        return self._run(list(versions), _rollback, versions=versions)

    def etcd_health(self) -> dict[str, tuple[bool, str]]:
        """Each etcd member's health (galley's EtcdHealth fact): (healthy, why not)."""
        members = list(self.inventory.get_group("etcd", []))
        state = State(self.inventory, Config(FAIL_PERCENT=0), initial_limit=members)
        try:
            connect_all(state)
            facts = get_facts(state, EtcdHealth)
        except PyinfraError as exc:
            return {"(all)": (False, f"cannot reach the etcd members: {exc}")}
        finally:
            disconnect_all(state)
        return {
            member.name: (bool(found and found["healthy"]), (found or {}).get("error") or "")
            for member, found in facts.items()
        }


def target_version(inventory: Inventory, version: str) -> None:
    """Make ``version`` the workers' ``kubernetes_version`` for this run (like ``--data``)."""
    for worker in inventory.get_group("workers", []):
        worker.data.kubernetes_version = version
