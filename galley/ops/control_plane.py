"""`galley rollout control-plane`: upgrade the apiservers, then the controller managers, then
the schedulers, one host at a time, on the kubelet rollout's batch runner and journal.

Refusals before anything (exit 2): no checksum for the target of kube-apiserver,
kube-controller-manager or kube-scheduler; another major or a skipped minor; a downgrade
without ``--allow-downgrade`` (never more than one minor); a kubelet the target would leave
outside the skew (newer than it, or more than `MAX_SKEW` minors older); an apiserver not ready
(``/readyz``) or an unhealthy etcd member. Components already at the target are skipped.

Order: the apiservers in inventory order, then the controller managers, then the schedulers
(Kubernetes' skew policy: neither is ever newer than an apiserver, so a downgrade across a
minor goes the other way round). Before each host, gates: every other apiserver ready and
every etcd member healthy. Per host: install the new binary side by side, switch, restart,
wait for the local health endpoint (an apiserver's ``/readyz``); an apiserver must then also
be ready and report the target at ``/version`` from the operator's side. A host that does not
come back is switched back to its previous version, restarted and waited for, and the run
stops naming it; hosts not yet reached are untouched. The journal
(``<galley_config_dir>/<cluster>/rollout-control-plane.json``) lets ``--resume`` skip
finished steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyinfra.api import Inventory
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host

from galley.components.kube_apiserver import KUBE_APISERVER, healthz_command
from galley.components.kube_controller_manager import KUBE_CONTROLLER_MANAGER
from galley.components.kube_controller_manager import PORT as CONTROLLER_MANAGER_PORT
from galley.components.kube_scheduler import KUBE_SCHEDULER
from galley.components.kube_scheduler import PORT as SCHEDULER_PORT
from galley.components.kubernetes import control_plane_hosts
from galley.components.model import Component
from galley.facts.fleet import ComponentVersions
from galley.journal import Journal
from galley.ops.batches import Batches
from galley.ops.etcd_snapshot import SnapshotError, operator_snapshot
from galley.ops.kubeapi import ApiError, kubelet_version
from galley.ops.release_hosts import HostWork, ReleaseHosts, set_version
from galley.ops.rolling import (
    Health,
    Hosts,
    Prepared,
    RolloutError,
    Runner,
    bare,
    checksum_problems,
    clients,
    declared_note,
    health_problems,
    rollout_cli,
    start_journal,
)
from galley.versions import minor_of, skew_problems, upgrade_problems

JOURNAL = "rollout-control-plane.json"
APISERVER = KUBE_APISERVER.name
COMPONENTS = (KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER)


def _work(component: Component, health: Callable[[Host], str]) -> HostWork:
    """Switch ``component``'s binary, restart its unit, then ``health`` must pass."""
    return HostWork(component.name, component.artifacts, (component.unit.name,), health)


# The health check of each on its host, on the private address: the apiserver's /readyz, the
# controller manager's and the scheduler's /healthz on their default secure ports.
WORK = {
    APISERVER: _work(
        KUBE_APISERVER,
        lambda host: healthz_command(host.data.private_ip, host.data.api_port, "readyz"),
    ),
    KUBE_CONTROLLER_MANAGER.name: _work(
        KUBE_CONTROLLER_MANAGER,
        lambda host: healthz_command(host.data.private_ip, CONTROLLER_MANAGER_PORT),
    ),
    KUBE_SCHEDULER.name: _work(
        KUBE_SCHEDULER, lambda host: healthz_command(host.data.private_ip, SCHEDULER_PORT)
    ),
}


@dataclass(frozen=True)
class Step:
    """One component on one host."""

    component: str
    host: str
    version: str  # what it runs now, e.g. 1.33.5 ("" when unknown)

    @property
    def key(self) -> str:
        """The step's record in the journal."""
        return f"{self.component}@{self.host}"


@dataclass(frozen=True)
class Plan:
    """The steps in order, and the ones left alone with the reason."""

    target: str
    steps: list[Step]
    skipped: list[tuple[str, str]]

    def describe(self) -> list[str]:
        """The plan as lines a person reads."""
        lines = [f"rollout of the control plane to v{self.target}"]
        for number, step in enumerate(self.steps, 1):
            was = f"v{step.version}" if step.version else "unknown"
            lines.append(f"  {number}. {step.host} {step.component} {was} -> v{self.target}")
        for key, reason in self.skipped:
            lines.append(f"  skip {key}: {reason}")
        if not self.steps:
            lines.append("  nothing to do")
        return lines


def make_plan(
    hosts: Sequence[str],
    versions: Mapping[str, Mapping[str, str]],
    target: str,
    done: Iterable[str] = (),
    downgrade: bool = False,
) -> Plan:
    """Every apiserver in ``hosts`` order, then the controller managers, then the schedulers
    (the other way round for a ``downgrade`` across a minor); ``versions`` is component ->
    host -> version; steps at ``target`` or ``done`` (journal keys) are skipped."""
    finished = set(done)
    order = [component.name for component in COMPONENTS]
    steps, skipped = [], []
    for component in reversed(order) if downgrade else order:
        for host in hosts:
            step = Step(component, host, versions.get(component, {}).get(host, ""))
            if step.key in finished:
                skipped.append((step.key, "finished (journal)"))
            elif step.version == target:
                skipped.append((step.key, f"already at v{target}"))
            else:
                steps.append(step)
    return Plan(target, steps, skipped)


def version_problems(
    target: str,
    apiservers: Mapping[str, str],
    kubelets: Mapping[str, str],
    allow_downgrade: bool = False,
) -> list[str]:
    """Why the control plane may not move to ``target``: the apiservers' rules
    (`upgrade_problems`) and each kubelet (node -> version) the target would leave outside
    the skew."""
    found = upgrade_problems(target, apiservers, allow_downgrade)
    for node, version in sorted(kubelets.items()):
        found += skew_problems(version, {"at the target": target}, f"{node}'s kubelet")
    return found


def gate_problems(step: Step, apiservers: Health, etcd: Health) -> list[str]:
    """Why ``step`` may not start: an etcd member unhealthy, or an apiserver not ready other
    than the one the step restarts."""
    others = {
        name: found
        for name, found in apiservers.items()
        if not (step.component == APISERVER and name == step.host)
    }
    return health_problems(others, etcd)


class Api(Protocol):
    """What the rollout needs of one apiserver (`galley.ops.kubeapi.KubeApi`)."""

    def readyz(self) -> tuple[bool, str]: ...
    def version(self) -> str: ...


@dataclass
class ControlPlaneRollout(Runner):
    """Runs a `Plan`: ``apiservers`` each host's own apiserver, ``hosts`` the host work per
    component, ``etcd`` the etcd gate."""

    apiservers: Mapping[str, Api]
    hosts: Mapping[str, Hosts]
    etcd: Callable[[], Health]
    ready_timeout: float = 300.0
    interval: float = 1.0

    def _run(self, plan: Plan) -> int:
        for step in plan.steps:
            readiness = {name: api.readyz() for name, api in self.apiservers.items()}
            problems = gate_problems(step, readiness, self.etcd())
            if problems:
                return self._stop(f"gate before {step.component} on {step.host}", problems)
            self.journal.update(step.key, version_before=step.version, state="upgrading")
            self.say(step.host, f"install, switch and restart {step.component} v{plan.target}")
            began = self.clock()
            outcome = self.hosts[step.component].upgrade(
                [step.host],
                lambda previous, step=step: self._record_previous({step.key: previous[step.host]}),
            )[step.host]
            error = outcome.error or self._confirm(step, plan.target)
            self.journal.update(
                step.key,
                health_wait_seconds=round(outcome.health_wait, 2),
                seconds=round(self.clock() - began, 2),
            )
            if error:
                return self._roll_back(step, plan.target, error)
            self.journal.update(step.key, state="done")
            self.say(step.host, f"{step.component} at v{plan.target}")
        return self._finished(plan.target)

    def _confirm(self, step: Step, version: str) -> str | None:
        """An apiserver must be ready and report ``version`` from here too; None when so."""
        if step.component != APISERVER:
            return None
        api = self.apiservers[step.host]
        self.say(step.host, f"wait for /readyz and /version v{version}")
        deadline = self.clock() + self.ready_timeout
        while True:
            try:
                ready, problem = api.readyz()
                reported = api.version() if ready else ""
            except ApiError as exc:
                ready, problem, reported = False, str(exc), ""
            if ready and reported.removeprefix("v") == version:
                return None
            if ready:
                problem = f"reports {reported}"
            if self.clock() >= deadline:
                return f"not ready at v{version} after {self.ready_timeout:.0f}s ({problem})"
            self.sleep(self.interval)

    def _roll_back(self, step: Step, target: str, error: str) -> int:
        what = f"{step.component} on {step.host} did not come back at v{target}"
        lines = [f"{step.host}: {step.component}: {error}"]
        previous = self.journal.node(step.key).get("previous") or {}
        version = previous.get(step.component)
        if not version:
            lines.append(f"{step.host}: no previous version recorded: fix it by hand")
            self.journal.update(step.key, state="failed")
            return self._stop(what, lines)
        self.say(step.host, f"roll back {step.component} to v{version}")
        outcome = self.hosts[step.component].rollback({step.host: previous})[step.host]
        problem = outcome.error or self._confirm(step, version)
        if problem:
            lines.append(f"{step.host}: rollback of {step.component} failed: {problem}")
            self.journal.update(step.key, state="failed")
        else:
            lines.append(f"{step.host}: {step.component} rolled back to {version}")
            self.journal.update(step.key, state="rolled-back")
        return self._stop(what, lines)


def _running(batches: Batches, hosts: list[str]) -> dict[str, dict[str, str]]:
    """The version each control-plane host runs of the controller manager and the scheduler
    (component -> host -> version, "" when unknown)."""
    names = [component.name for component in COMPONENTS if component.name != APISERVER]
    try:
        found = batches.facts(hosts, ComponentVersions, components=names)
    except PyinfraError as exc:
        raise RolloutError(f"cannot read the control-plane hosts' versions: {exc}") from None
    result: dict[str, dict[str, str]] = {name: {} for name in names}
    for host, components in found.items():
        for name in names:
            seen = (components or {}).get(name) or {}
            result[name][host] = seen.get("running") or seen.get("current") or ""
    return result


def _prepare(
    inventory: Inventory,
    to: str,
    resume: bool,
    allow_downgrade: bool,
    ready_timeout: float,
    dry_run: bool,
) -> Prepared:
    """Everything checked before a change (RolloutError if refused): the plan, the journal,
    and how to run it."""
    target = bare(to)
    endpoint, apiservers = clients(inventory)
    hosts = list(apiservers)
    data = control_plane_hosts(inventory)[0].data
    declared = data.get("kubernetes_version")
    readiness = {name: api.readyz() for name, api in apiservers.items()}
    found = health_problems(readiness, {})
    if found:
        raise RolloutError("refusing: " + "; ".join(found))
    running = {name: bare(api.version()) for name, api in apiservers.items()}
    kubelets = {
        node["metadata"]["name"]: kubelet_version(node)
        for node in endpoint.nodes()
        if kubelet_version(node)
    }
    found = version_problems(target, running, kubelets, allow_downgrade)
    set_version(inventory, "control_plane", target)
    found += checksum_problems(inventory, COMPONENTS)
    batches = Batches(inventory)
    if not found:
        found = health_problems({}, batches.etcd_health())
    if found:
        raise RolloutError("refusing: " + "; ".join(found))
    versions = {APISERVER: running, **_running(batches, hosts)}
    journal = start_journal(data, JOURNAL, target, resume, dry_run)
    downgrade = minor_of(target) < min(minor_of(version) for version in running.values())
    plan = make_plan(hosts, versions, target, journal.done() if resume else (), downgrade)
    note = declared_note(declared, target, "control-plane", "the control plane")
    if note:
        print(note)
    rollout = ControlPlaneRollout(
        apiservers,
        {name: ReleaseHosts(inventory, work, ready_timeout) for name, work in WORK.items()},
        batches.etcd_health,
        ready_timeout=ready_timeout,
        journal=journal,
        out=lambda line: print(line, flush=True),
    )
    lines = [*plan.describe(), "before the first step: a checked etcd snapshot to this machine"]
    return Prepared(
        lines,
        bool(plan.steps),
        journal,
        data,
        lambda: _snapshot_first(inventory, journal, lambda: rollout.run(plan)),
    )


def _snapshot_first(inventory: Inventory, journal: Journal, run: Callable[[], int]) -> int:
    """Take the etcd snapshot a version change starts with (once per rollout), then run."""
    if "snapshot" not in journal.data:
        try:
            path, _ = operator_snapshot(inventory, log=lambda line: print(line, flush=True))
        except SnapshotError as exc:
            raise RolloutError(f"no etcd snapshot, so no change: {exc}") from None
        journal.update(snapshot=str(path))
    return run()


def rollout_control_plane_cli(
    inventory: Inventory,
    to: str,
    dry_run: bool = False,
    resume: bool = False,
    allow_downgrade: bool = False,
    ready_timeout: float = 300.0,
) -> int:
    """`galley rollout control-plane --to VERSION INVENTORY`: 0 done (or nothing to do),
    1 stopped with a report, 2 refused before any change."""
    return rollout_cli(
        lambda: _prepare(inventory, to, resume, allow_downgrade, ready_timeout, dry_run),
        dry_run,
    )
