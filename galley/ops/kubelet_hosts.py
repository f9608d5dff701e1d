"""The host side of a kubelet rollout, a batch at a time through `galley.ops.batches`.

On each host: install kubelet and kube-proxy of the target version next to the running ones
(checksum verified before anything is unpacked, `galley.host.release`), switch ``current``, restart
both units and wait for the kubelet's local ``/healthz``. A rollback switches back to versions
that are still on disk and does the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
from pyinfra import host
from pyinfra.api import Inventory, State, deploy
from pyinfra.api.host import Host
from pyinfra.operations import python

from galley.components.engine import install_artifact
from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.facts.release import InstalledReleases
from galley.host.release import switch_release
from galley.host.restarts import systemctl_restart
from galley.ops.batches import Batches, HostOutcome

# What a node rollout installs side by side and switches: the kubelet and kube-proxy.
ARTIFACTS = (*KUBELET.artifacts, *KUBE_PROXY.artifacts)
# kubeletconfig healthzBindAddress/healthzPort as templates/kubelet-config.yaml.j2 sets them.
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
Versions = dict[str, str | None]  # binary -> version


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
        self.batches = Batches(inventory)
        self.health_timeout = health_timeout

    def upgrade(
        self, names: list[str], record: Callable[[dict[str, Versions]], None]
    ) -> dict[str, HostOutcome]:
        """Install, switch, restart and wait on ``names``; ``record`` gets the versions that
        were active before (binary -> version) once known, before anything changes."""
        previous: dict[str, Versions] = {}
        return self.batches.run(
            names,
            _upgrade,
            lambda: record(previous),
            timeout=self.health_timeout,
            previous=previous,
        )

    def rollback(self, versions: dict[str, Versions]) -> dict[str, HostOutcome]:
        """Switch each host back to ``versions[host]``, restart and wait."""
        return self.batches.run(
            list(versions), _rollback, timeout=self.health_timeout, versions=versions
        )

    def etcd_health(self) -> dict[str, tuple[bool, str]]:
        """Each etcd member's health, for the gates."""
        return self.batches.etcd_health()


def target_version(inventory: Inventory, version: str) -> None:
    """Make ``version`` the workers' ``kubernetes_version`` for this run (like ``--data``)."""
    for worker in inventory.get_group("workers", []):
        worker.data.kubernetes_version = version
