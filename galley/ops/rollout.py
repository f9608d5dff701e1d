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
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from galley.components.kube_proxy import KUBE_PROXY
from galley.components.kubelet import KUBELET
from galley.components.kubernetes import apiserver_urls, operator_api_urls
from galley.lock import LockError, hold, lock_paths
from galley.ops.admin import AdminFiles, operator_dir
from galley.ops.drain import drain
from galley.ops.journal import Journal, JournalError
from galley.ops.kubeapi import ApiError, KubeApi, kubelet_version, node_ready, node_unschedulable
from galley.ops.kubelet_hosts import ARTIFACTS, PyinfraHosts, target_version
from galley.text import clean
from galley.vault import VaultError, VaultSettings, connect
from galley.versions import VersionError, skew_problems
from galley.versions import bare as bare_version

JOURNAL = "rollout-kubelet.json"


class RolloutError(Exception):
    """The rollout cannot start (nothing was changed)."""


def bare(version: str) -> str:
    """``v1.33.6`` -> ``1.33.6``; raises RolloutError for anything else."""
    try:
        return bare_version(version)
    except VersionError as exc:
        raise RolloutError(str(exc)) from None


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
    found = [f"apiserver {server}: {reason}" for server, (ok, reason) in health.items() if not ok]
    found += [
        f"etcd member {name}: {reason}" for name, (ok, reason) in (etcd or {}).items() if not ok
    ]
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


class Hosts(Protocol):
    """The host work (`galley.ops.batches.PyinfraHosts`)."""

    def upgrade(self, names: list[str], record: Callable[[dict], None]) -> dict[str, Any]: ...
    def rollback(self, versions: dict[str, dict]) -> dict[str, Any]: ...
    def etcd_health(self) -> dict[str, tuple[bool, str]]: ...


@dataclass
class Rollout:
    """Runs a `Plan`: ``api`` is the cluster, ``apiservers`` each one for the gates."""

    api: Api
    apiservers: Mapping[str, Api]
    hosts: Hosts
    journal: Journal
    budget: int
    drain_timeout: float = 300.0
    ready_timeout: float = 300.0
    interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    out: Callable[[str], None] = print
    report: list[str] = field(default_factory=list)
    cordoned_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def say(self, node: str, step: str) -> None:
        """A progress line: elapsed time, node, step."""
        self.out(clean(f"[{self.clock() - self.started:7.1f}s] {node}: {step}"))

    def run(self, plan: Plan) -> int:
        """Upgrade batch after batch; 0 when every node is at the target, 1 when stopped.

        Whatever goes wrong (an API error, a bug, Ctrl-C), the nodes this run cordoned and did
        not finish are uncordoned and the journal records how the run ended before the error
        goes on (``interrupted`` stays resumable: a plain rerun is refused)."""
        try:
            return self._run(plan)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            for name in list(self.cordoned_at):
                if self.journal.node(name).get("state") != "done":
                    with contextlib.suppress(Exception):
                        self._uncordon(name)
            self.journal.update(
                status="interrupted" if interrupted else "failed",
                error=clean(f"{type(exc).__name__}: {exc}"),
            )
            raise

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
        self.journal.update(status="finished")
        self.out(f"rollout to v{plan.target} finished")
        return 0

    def _stop(self, what: str, problems: Iterable[str]) -> int:
        self.report = [f"rollout stopped: {what}", *(f"  {line}" for line in problems)]
        self.journal.update(status="failed")
        for line in self.report:
            self.out(line)
        return 1

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

    def _record_previous(self, previous: Mapping[str, Mapping[str, str | None]]) -> None:
        for name, versions in previous.items():
            if "previous" not in self.journal.node(name):
                self.journal.update(name, previous=dict(versions))

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


def _clients(inventory: Any) -> tuple[KubeApi, dict[str, KubeApi]]:
    """The admin client of the API (any apiserver that answers, or the endpoint), and one per
    control-plane host for the gates."""
    data = inventory.get_group("workers")[0].data
    files = AdminFiles(operator_dir(data))
    if not files.cert.exists():
        raise RolloutError(f"no admin credential in {files.directory}: deploy the cluster first")
    gates = {url: KubeApi(url, files) for url in apiserver_urls(inventory)}
    return KubeApi(operator_api_urls(inventory), files), gates


def checksum_problems(inventory: Any) -> list[str]:
    """What the workers lack to install their ``kubernetes_version`` (sha256 per arch)."""
    from galley.inventory.validate import problems

    fields = {"arch"} | {f for a in ARTIFACTS for f in (a.version_field, a.checksums_field)}
    return [str(p) for p in problems(inventory, [KUBELET, KUBE_PROXY]) if p.field in fields]


def _prepare(inventory: Any, target: str, budget_text: str, resume: bool) -> tuple:
    """Everything checked before a change (RolloutError if refused): the plan, the journal,
    the budget, the API endpoint's client and one client per apiserver."""
    workers = [one.name for one in inventory.get_group("workers", [])]
    if not workers:
        raise RolloutError("no hosts in group 'workers'")
    declared = inventory.get_group("workers")[0].data.get("kubernetes_version")
    target_version(inventory, target)
    found = checksum_problems(inventory)
    if found:
        raise RolloutError("refusing: " + "; ".join(found))
    endpoint, apiservers = _clients(inventory)
    versions = {server: api.version() for server, api in apiservers.items()}
    found = skew_problems(target, versions)
    if found:
        raise RolloutError("refusing: " + "; ".join(found))
    nodes = {node["metadata"]["name"]: node for node in endpoint.nodes()}
    missing = [name for name in workers if name not in nodes]
    if missing:
        raise RolloutError(f"refusing: no Node object for worker(s) {', '.join(missing)}")
    journal_path = operator_dir(inventory.get_group("workers")[0].data) / JOURNAL
    journal = Journal.start(journal_path, target, resume)
    budget = parse_budget(budget_text, len(workers))
    plan = make_plan(workers, nodes, target, budget, journal.done() if resume else ())
    if declared and bare(str(declared)) != target:
        print(
            f"note: the inventory says kubernetes_version {declared}: set it to {target}, or the "
            "next workers deploy switches the kubelet back"
        )
    return plan, journal, budget, endpoint, apiservers


def rollout_kubelet_cli(
    inventory_path: str,
    to: str,
    max_unavailable: str = "1",
    dry_run: bool = False,
    resume: bool = False,
    drain_timeout: float = 300.0,
    ready_timeout: float = 300.0,
) -> int:
    """`galley rollout kubelet --to VERSION INVENTORY`: 0 done (or nothing to do), 1 stopped
    with a report, 2 refused before any change."""
    from galley.inventory.load import InventoryLoadError, load_inventory

    try:
        target = bare(to)
        inventory = load_inventory(inventory_path)
        plan, journal, budget, endpoint, apiservers = _prepare(
            inventory, target, max_unavailable, resume
        )
    except (RolloutError, JournalError, ApiError, InventoryLoadError) as exc:
        print(f"galley: rollout: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    for line in plan.describe():
        print(line, flush=True)
    if dry_run or not plan.batches:
        return 0
    data = inventory.get_group("workers")[0].data
    try:
        vault = connect(VaultSettings.from_data(data), lock_paths(data.cluster_name))
        hold(vault, data.cluster_name)
    except (VaultError, LockError) as exc:
        print(f"galley: rollout: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    logging.getLogger("pyinfra").addHandler(logging.StreamHandler(sys.stderr))
    journal.update(status="running")
    rollout = Rollout(
        endpoint,
        apiservers,
        PyinfraHosts(inventory, ready_timeout),
        journal,
        budget,
        drain_timeout=drain_timeout,
        ready_timeout=ready_timeout,
        out=lambda line: print(line, flush=True),
    )
    try:
        return rollout.run(plan)
    except ApiError as exc:
        print(f"galley: rollout: {exc}: resume with --resume ({journal.path})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"galley: rollout interrupted: resume with --resume ({journal.path})", file=sys.stderr
        )
        return 130
    except Exception as exc:  # recorded in the journal by Rollout.run, nodes uncordoned
        print(
            f"galley: rollout failed: {clean(f'{type(exc).__name__}: {exc}')}; the nodes it "
            f"cordoned are uncordoned; see {journal.path}",
            file=sys.stderr,
        )
        return 1
