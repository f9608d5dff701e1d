"""The host side of a rollout, a batch at a time through `galley.ops.batches`.

On each host: install the releases of the target version next to the running ones (checksum
verified before anything is unpacked, `galley.host.release`), switch ``current``, restart the
units and wait for the component's local health endpoint. A rollback switches back to
versions that are still on disk and does the same. `HostWork` says what one rollout switches:
the kubelet and kube-proxy on a worker, or one control-plane component.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from pyinfra import host
from pyinfra.api import Inventory, State, deploy
from pyinfra.api.host import Host
from pyinfra.operations import python

from galley.components.engine import install_artifact
from galley.components.model import Artifact
from galley.facts.release import InstalledReleases
from galley.host.release import switch_release
from galley.host.restarts import systemctl_restart
from galley.ops.batches import Batches, HostOutcome

Versions = dict[str, str | None]  # release -> version


@dataclass(frozen=True)
class HostWork:
    """What a rollout switches on a host: ``artifacts`` installed side by side, ``units``
    restarted in this order, then ``health(host)``, a shell command, must succeed."""

    what: str  # names the component in messages, e.g. "kubelet"
    artifacts: tuple[Artifact, ...]
    units: tuple[str, ...]
    health: Callable[[Host], str]


def _wait_healthy(
    state: State, host: Host, work: HostWork, timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    """Poll the health command; a timeout is recorded in ``outcomes`` (the rollout's verdict),
    not raised: nothing runs after this on the host."""
    started = time.monotonic()
    command = work.health(host)
    while True:
        ok, output = host.run_shell_command(command)
        outcomes[host.name].health_wait = time.monotonic() - started
        if ok:
            outcomes[host.name].healthy = True
            return
        if time.monotonic() - started >= timeout:
            detail = " ".join(output.stderr_lines[-1:]) if output else ""
            message = f"{work.what} not healthy after {timeout:.0f}s ({detail or 'no answer'})"
            outcomes[host.name].error = message
            host.log(message)
            return
        gevent.sleep(1)


def _restart_and_wait(work: HostWork, timeout: float, outcomes: dict[str, HostOutcome]) -> None:
    for unit in host.loop(work.units):
        python.call(name=f"Restart {unit}", function=systemctl_restart, unit=unit)
    python.call(
        name=f"Wait for {work.what} to be healthy",
        function=_wait_healthy,
        work=work,
        timeout=timeout,
        outcomes=outcomes,
    )


@deploy("Install, switch and restart")
def _upgrade(
    work: HostWork, previous: dict[str, Versions], timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    previous[host.name] = {
        artifact.release: host.get_fact(InstalledReleases, release=artifact.release)["current"]
        for artifact in work.artifacts
    }
    for artifact in host.loop(work.artifacts):
        install_artifact(artifact, host.data)
    _restart_and_wait(work, timeout, outcomes)


@deploy("Switch back and restart")
def _rollback(
    work: HostWork, versions: dict[str, Versions], timeout: float, outcomes: dict[str, HostOutcome]
) -> None:
    for artifact in host.loop(work.artifacts):
        switch_release(artifact.release, versions[host.name][artifact.release], artifact.binaries)
    _restart_and_wait(work, timeout, outcomes)


class ReleaseHosts:
    """Runs the host work of a rollout (``work``) on named hosts of ``inventory``.

    The hosts' version field must already be the target (see `set_version`).
    """

    def __init__(self, inventory: Inventory, work: HostWork, health_timeout: float) -> None:
        self.batches = Batches(inventory)
        self.work = work
        self.health_timeout = health_timeout

    def upgrade(
        self, names: list[str], record: Callable[[dict[str, Versions]], None]
    ) -> dict[str, HostOutcome]:
        """Install, switch, restart and wait on ``names``; ``record`` gets the versions that
        were active before (host -> release -> version) once known, before anything changes."""
        previous: dict[str, Versions] = {}
        return self.batches.run(
            names,
            _upgrade,
            lambda: record(previous),
            work=self.work,
            timeout=self.health_timeout,
            previous=previous,
        )

    def rollback(self, versions: dict[str, Versions]) -> dict[str, HostOutcome]:
        """Switch each host back to ``versions[host]``, restart and wait."""
        return self.batches.run(
            list(versions),
            _rollback,
            work=self.work,
            timeout=self.health_timeout,
            versions=versions,
        )

    def etcd_health(self) -> dict[str, tuple[bool, str]]:
        """Each etcd member's health, for the gates."""
        return self.batches.etcd_health()


def set_version(inventory: Inventory, group: str, version: str) -> None:
    """Make ``version`` the ``kubernetes_version`` of ``group``'s hosts for this run (like
    ``--data``)."""
    for member in inventory.get_group(group, []):
        member.data.kubernetes_version = version
