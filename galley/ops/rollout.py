"""`galley rollout kubelet`: upgrade the workers' kubelet and kube-proxy a batch at a time.

Order: the ``workers`` group in inventory order (the operator decides who goes first), cut
into batches of ``--max-unavailable`` nodes (``N`` or ``P%`` of the workers, at least one).
Before anything: the target needs a checksum for kubelet and kube-proxy, must not be newer
(minor) than any apiserver nor more than `MAX_SKEW` minors older (Kubernetes' skew policy
since 1.28); Nodes already reporting the target are skipped. Before each batch, gates: every
apiserver's ``/healthz`` (which includes its etcd check) and no more Nodes NotReady or
cordoned than the budget allows. Per node: cordon, drain (the Eviction API, so
PodDisruptionBudgets hold; DaemonSet and mirror pods stay), install + switch + restart on the
host (`galley.ops.batches`), wait until the Node is Ready and reports the target, uncordon.
A drain that times out uncordons and stops naming the blockers; a node that does not come back
is switched back, restarted, waited for and uncordoned, and the run stops. The journal
(``<galley_config_dir>/<cluster>/rollout-kubelet.json``) lets ``--resume`` skip finished nodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyinfra.api import Inventory

from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.ops.drain import drain
from galley.ops.kubeapi import ApiError, kubelet_version, node_ready, node_unschedulable
from galley.ops.release_hosts import HostWork, ReleaseHosts, set_version
from galley.ops.rolling import (
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
from galley.versions import skew_problems

JOURNAL = "rollout-kubelet.json"
# kubeletconfig healthzBindAddress/healthzPort as templates/kubelet-config.yaml.j2 sets them.
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
# What a node rollout installs side by side and switches: the kubelet and kube-proxy.
NODE_WORK = HostWork(
    "kubelet",
    (*KUBELET.artifacts, *KUBE_PROXY.artifacts),
    ("kube-proxy", "kubelet"),
    lambda host: f"curl -fsS --max-time 2 {KUBELET_HEALTHZ}",
)


def parse_budget(text: str, workers: int) -> int:
    """``--max-unavailable``: ``N`` nodes or ``P%`` of ``workers`` (rounded down, at least 1)."""
    problem = RolloutError(f"--max-unavailable {text!r}: give N (>= 1) or P% (0 < P <= 100)")
    try:
        number = float(text[:-1]) if text.endswith("%") else int(text)
    except ValueError:
        raise problem from None
    if text.endswith("%"):
        if not 0 < number <= 100:
            raise problem
        return max(1, int(workers * number / 100))
    if number < 1:
        raise problem
    return int(number)


@dataclass(frozen=True)
class Step:
    """One node of the plan."""

    node: str
    version: str  # what the Node reports now, e.g. v1.33.5


@dataclass(frozen=True)
class Plan:
    """The batches, in order, and the nodes left alone with the reason."""

    target: str
    batches: list[list[Step]]
    skipped: list[tuple[str, str]]

    def describe(self) -> list[str]:
        """The plan as lines a person reads."""
        lines = [f"rollout of kubelet and kube-proxy to v{self.target}"]
        for number, batch in enumerate(self.batches, 1):
            for step in batch:
                lines.append(f"  batch {number}: {step.node} {step.version} -> v{self.target}")
        for node, reason in self.skipped:
            lines.append(f"  skip {node}: {reason}")
        if not self.batches:
            lines.append("  nothing to do")
        return lines


def make_plan(
    order: Sequence[str],
    nodes: Mapping[str, dict],
    target: str,
    budget: int,
    done: Iterable[str] = (),
) -> Plan:
    """Batches of at most ``budget`` nodes in ``order``; nodes at ``target`` or ``done`` skipped."""
    finished = set(done)
    todo, skipped = [], []
    for name in order:
        version = kubelet_version(nodes[name])
        if name in finished:
            skipped.append((name, "finished (journal)"))
        elif version.removeprefix("v") == target:
            skipped.append((name, f"already at {version}"))
        else:
            todo.append(Step(name, version or "unknown"))
    batches = [todo[index : index + budget] for index in range(0, len(todo), budget)]
    return Plan(target, batches, skipped)


def gate_problems(
    health: Mapping[str, tuple[bool, str]],
    nodes: Iterable[dict],
    batch: Iterable[str],
    budget: int,
    etcd: Mapping[str, tuple[bool, str]] | None = None,
) -> list[str]:
    """Why the next batch may not start: an unhealthy apiserver or etcd member, or too many
    Nodes NotReady or cordoned besides the batch."""
    found = health_problems(health, etcd or {})
    members = set(batch)
    down = []
    for node in nodes:
        name = node["metadata"]["name"]
        if name in members:
            continue
        if not node_ready(node):
            down.append(f"{name} NotReady")
        elif node_unschedulable(node):
            down.append(f"{name} cordoned")
    if down and len(down) + len(members) > budget:
        found.append(
            f"{len(members)} more node(s) would make {len(down) + len(members)} unavailable, "
            f"over the budget of {budget}: {', '.join(sorted(down))}"
        )
    return found


class Api(Protocol):
    """What a rollout needs of the Kubernetes API (`galley.ops.kubeapi.KubeApi`)."""

    def nodes(self) -> list[dict]: ...
    def node(self, name: str) -> dict: ...
    def set_unschedulable(self, name: str, value: bool) -> dict: ...
    def pods_on(self, node: str) -> list[dict]: ...
    def evict(self, namespace: str, pod: str) -> Any: ...
    def healthz(self) -> tuple[bool, str]: ...


@dataclass
class Rollout(Runner):
    """Runs a `Plan`: ``api`` is the cluster, ``apiservers`` each one for the gates."""

    api: Api
    apiservers: Mapping[str, Api]
    hosts: Hosts
    budget: int
    drain_timeout: float = 300.0
    ready_timeout: float = 300.0
    interval: float = 1.0
    cordoned_at: dict[str, float] = field(default_factory=dict)

    def _clean_up(self) -> None:
        """Uncordon the nodes this run cordoned and did not finish."""
        for name in list(self.cordoned_at):
            if self.journal.node(name).get("state") != "done":
                with contextlib.suppress(Exception):
                    self._uncordon(name)

    def _run(self, plan: Plan) -> int:
        for number, batch in enumerate(plan.batches, 1):
            names = [step.node for step in batch]
            problems = gate_problems(
                {server: api.healthz() for server, api in self.apiservers.items()},
                self.api.nodes(),
                names,
                self.budget,
                self.hosts.etcd_health(),
            )
            if problems:
                return self._stop(f"gate before batch {number} ({', '.join(names)})", problems)
            for step in batch:
                self.journal.update(step.node, version_before=step.version)
            stopped = self._batch(names, plan.target)
            if stopped is not None:
                return stopped
        return self._finished(plan.target)

    def _cordon(self, name: str) -> None:
        record = self.journal.node(name)
        if "cordoned_by_rollout" not in record:
            ours = not node_unschedulable(self.api.node(name))
            self.journal.update(name, cordoned_by_rollout=ours)
        self.say(name, "cordon")
        self.api.set_unschedulable(name, True)
        self.journal.update(name, state="cordoned")
        self.cordoned_at[name] = self.clock()

    def _uncordon(self, name: str) -> None:
        if self.journal.node(name).get("cordoned_by_rollout", True):
            self.say(name, "uncordon")
            self.api.set_unschedulable(name, False)
        else:
            self.say(name, "left cordoned (it was cordoned before the rollout)")

    def _batch(self, names: list[str], target: str) -> int | None:
        for name in names:
            self._cordon(name)
        for name in names:
            self.say(name, "drain")
            began = self.clock()
            blockers = drain(self.api, name, self.drain_timeout, self.clock, self.sleep)
            if blockers:
                for each in names:
                    self._uncordon(each)
                    self.journal.update(each, state="untouched")
                return self._stop(f"drain of {name} timed out, nodes uncordoned", blockers)
            self.journal.update(name, state="drained", drain_seconds=round(self.clock() - began, 2))
        for name in names:
            self.say(name, f"install, switch and restart kubelet and kube-proxy v{target}")
            self.journal.update(name, state="upgrading")
        began = self.clock()
        outcomes = self.hosts.upgrade(names, self._record_previous)
        for name in names:
            self.journal.update(name, state="switched", host_seconds=round(self.clock() - began, 2))
        failed = {name: outcome.error for name, outcome in outcomes.items() if outcome.error}
        failed |= self._wait(
            [name for name in names if name not in failed], f"v{target}", "Ready at"
        )
        for name in names:
            outcome = outcomes[name]
            self.journal.update(name, health_wait_seconds=round(outcome.health_wait, 2))
            if name not in failed:
                self._uncordon(name)
                seconds = round(self.clock() - self.cordoned_at[name], 2)
                self.journal.update(name, state="done", seconds=seconds)
        if failed:
            return self._roll_back(failed)
        return None

    def _wait(self, names: list[str], version: str, what: str) -> dict[str, str]:
        """Wait until each Node is Ready and reports ``version``; the ones that did not."""
        for name in names:
            self.say(name, f"wait for {what} {version}")
        deadline = self.clock() + self.ready_timeout
        pending = {name: "not checked" for name in names}
        while pending:
            for name in list(pending):
                try:
                    node = self.api.node(name)
                except ApiError as exc:
                    pending[name] = str(exc)
                    continue
                reported = kubelet_version(node)
                if node_ready(node) and reported == version:
                    del pending[name]
                    self.say(name, f"Ready at {reported}")
                    waited = round(self.clock() + self.ready_timeout - deadline, 2)
                    self.journal.update(name, ready_wait_seconds=waited)
                else:
                    state = "Ready" if node_ready(node) else "NotReady"
                    pending[name] = f"{state}, reports {reported or 'no version'}"
            if pending and self.clock() >= deadline:
                return {
                    name: f"not Ready at {version} after {self.ready_timeout:.0f}s ({reason})"
                    for name, reason in pending.items()
                }
            if pending:
                self.sleep(self.interval)
        return {}

    def _roll_back(self, failed: Mapping[str, str]) -> int:
        lines = [f"{name}: {reason}" for name, reason in failed.items()]
        versions = {name: self.journal.node(name).get("previous") or {} for name in failed}
        unknown = [name for name, found in versions.items() if not all(found.values())]
        for name in unknown:
            lines.append(f"{name}: no previous version recorded: left cordoned, fix it by hand")
            self.journal.update(name, state="failed")
        back = {name: found for name, found in versions.items() if name not in unknown}
        if back:
            for name, found in back.items():
                self.say(name, f"roll back to kubelet {found['kubelet']}")
            outcomes = self.hosts.rollback(back)
            broken = {name: outcome.error for name, outcome in outcomes.items() if outcome.error}
            waiting = [name for name in back if name not in broken]
            for name in waiting:
                broken |= self._wait([name], f"v{back[name]['kubelet']}", "Ready again at")
            for name in back:
                if name in broken:
                    lines.append(f"{name}: rollback failed, left cordoned: {broken[name]}")
                    self.journal.update(name, state="failed")
                else:
                    self._uncordon(name)
                    lines.append(f"{name}: rolled back to {back[name]['kubelet']} and uncordoned")
                    self.journal.update(name, state="rolled-back")
        return self._stop("node(s) did not come back at the target version", lines)


def _prepare(
    inventory: Inventory,
    to: str,
    budget_text: str,
    resume: bool,
    timeouts: tuple[float, float],
    dry_run: bool,
) -> Prepared:
    """Everything checked before a change (RolloutError if refused): the plan, the journal,
    and how to run it."""
    target = bare(to)
    workers = [one.name for one in inventory.get_group("workers", [])]
    if not workers:
        raise RolloutError("no hosts in group 'workers'")
    data = inventory.get_group("workers")[0].data
    declared = data.get("kubernetes_version")
    endpoint, apiservers = clients(inventory)
    versions = {server: api.version() for server, api in apiservers.items()}
    found = skew_problems(target, versions)
    set_version(inventory, "workers", target)
    found += checksum_problems(inventory, [KUBELET, KUBE_PROXY])
    if found:
        raise RolloutError("refusing: " + "; ".join(found))
    nodes = {node["metadata"]["name"]: node for node in endpoint.nodes()}
    missing = [name for name in workers if name not in nodes]
    if missing:
        raise RolloutError(f"refusing: no Node object for worker(s) {', '.join(missing)}")
    journal = start_journal(data, JOURNAL, target, resume, dry_run)
    budget = parse_budget(budget_text, len(workers))
    plan = make_plan(workers, nodes, target, budget, journal.done() if resume else ())
    note = declared_note(declared, target, "workers", "the kubelet")
    if note:
        print(note)
    drain_timeout, ready_timeout = timeouts
    rollout = Rollout(
        endpoint,
        apiservers,
        ReleaseHosts(inventory, NODE_WORK, ready_timeout),
        budget,
        drain_timeout=drain_timeout,
        ready_timeout=ready_timeout,
        journal=journal,
        out=lambda line: print(line, flush=True),
    )
    return Prepared(plan.describe(), bool(plan.batches), journal, data, lambda: rollout.run(plan))


def rollout_kubelet_cli(
    inventory: Inventory,
    to: str,
    max_unavailable: str = "1",
    dry_run: bool = False,
    resume: bool = False,
    drain_timeout: float = 300.0,
    ready_timeout: float = 300.0,
) -> int:
    """`galley rollout kubelet --to VERSION INVENTORY`: 0 done (or nothing to do), 1 stopped
    with a report, 2 refused before any change."""
    return rollout_cli(
        lambda: _prepare(
            inventory, to, max_unavailable, resume, (drain_timeout, ready_timeout), dry_run
        ),
        dry_run,
    )
