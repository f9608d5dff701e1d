"""What the rollouts share (`galley rollout kubelet`, `galley rollout control-plane`): the
refusals, the API clients, the runner's progress lines, stops and journal bookkeeping, and the
command's course: refusals, plan, dry run, lock, run."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from galley.components.kubernetes import (
    apiserver_urls,
    control_plane_hosts,
    operator_api_urls,
)
from galley.components.model import Component
from galley.journal import Journal, JournalError, operator_dir
from galley.lock import LockError, check_free, hold, lock_paths
from galley.ops.admin import AdminFiles
from galley.ops.kubeapi import ApiError, KubeApi
from galley.text import clean
from galley.vault.client import VaultError, VaultSettings, connect
from galley.versions import VersionError
from galley.versions import bare as bare_version

Health = Mapping[str, tuple[bool, str]]  # name -> (healthy, why not)


class RolloutError(Exception):
    """The rollout cannot start (nothing was changed)."""


def bare(version: str) -> str:
    """``v1.33.6`` -> ``1.33.6``; raises RolloutError for anything else."""
    try:
        return bare_version(version)
    except VersionError as exc:
        raise RolloutError(str(exc)) from None


def declared_note(declared: object, target: str, group: str, what: str) -> str | None:
    """A note when the inventory's ``kubernetes_version`` is not the target: the next deploy
    of ``group`` would switch ``what`` back."""
    if declared and bare(str(declared)) != target:
        return (
            f"note: the inventory says kubernetes_version {declared}: set it to {target}, or the "
            f"next {group} deploy switches {what} back"
        )
    return None


def health_problems(apiservers: Health, etcd: Health) -> list[str]:
    """One line per unhealthy apiserver and etcd member."""
    found = [
        f"apiserver {server}: {reason}" for server, (ok, reason) in apiservers.items() if not ok
    ]
    return found + [
        f"etcd member {name}: {reason}" for name, (ok, reason) in etcd.items() if not ok
    ]


def clients(inventory: Any) -> tuple[KubeApi, dict[str, KubeApi]]:
    """The admin client of the API (any apiserver that answers, or the endpoint), and one per
    control-plane host (its own apiserver) for the gates."""
    hosts = control_plane_hosts(inventory)
    if not hosts:
        raise RolloutError("no hosts in group 'control_plane' to serve the Kubernetes API")
    files = AdminFiles(operator_dir(hosts[0].data))
    if not files.cert.exists():
        raise RolloutError(f"no admin credential in {files.directory}: deploy the cluster first")
    urls = apiserver_urls(inventory)
    own = {host.name: KubeApi(url, files) for host, url in zip(hosts, urls, strict=True)}
    return KubeApi(operator_api_urls(inventory), files), own


def checksum_problems(inventory: Any, components: Iterable[Component]) -> list[str]:
    """What the hosts of ``components`` lack to install their version (sha256 per arch)."""
    from galley.inventory.validate import problems

    components = list(components)
    fields = {"arch"} | {
        name
        for component in components
        for artifact in component.artifacts
        for name in (artifact.version_field, artifact.checksums_field)
    }
    return [str(p) for p in problems(inventory, components) if p.field in fields]


class Hosts(Protocol):
    """The host work of a rollout (`galley.ops.release_hosts.ReleaseHosts`)."""

    def upgrade(self, names: list[str], record: Callable[[dict], None]) -> dict[str, Any]: ...
    def rollback(self, versions: dict[str, dict]) -> dict[str, Any]: ...
    def etcd_health(self) -> dict[str, tuple[bool, str]]: ...


@dataclass(kw_only=True)
class Runner:
    """The bookkeeping every rollout's runner shares: progress lines, the journal, stops."""

    journal: Journal
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    out: Callable[[str], None] = print
    report: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def say(self, subject: str, step: str) -> None:
        """A progress line: elapsed time, node or host, step."""
        self.out(clean(f"[{self.clock() - self.started:7.1f}s] {subject}: {step}"))

    def run(self, plan: Any) -> int:
        """Run ``plan``: 0 when all is at the target, 1 when stopped with a report.

        Whatever goes wrong (an API error, a bug, Ctrl-C), `_clean_up` runs and the journal
        records how the run ended before the error goes on (``interrupted`` stays resumable:
        a plain rerun is refused)."""
        try:
            return self._run(plan)
        except BaseException as exc:
            self._clean_up()
            self.journal.update(
                status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                error=clean(f"{type(exc).__name__}: {exc}"),
            )
            raise

    def _run(self, plan: Any) -> int:
        raise NotImplementedError

    def _clean_up(self) -> None:
        """Undo what a run left half done when it ends by an error (nothing by default)."""

    def _stop(self, what: str, problems: Iterable[str]) -> int:
        self.report = [f"rollout stopped: {what}", *(f"  {line}" for line in problems)]
        self.journal.update(status="failed")
        for line in self.report:
            self.out(line)
        return 1

    def _finished(self, target: str) -> int:
        self.journal.update(status="finished")
        self.out(f"rollout to v{target} finished")
        return 0

    def _record_previous(self, previous: Mapping[str, Mapping[str, str | None]]) -> None:
        """Keep the versions active before the change (journal key -> release -> version);
        the first record stays (a resumed run finds the new version active)."""
        for key, versions in previous.items():
            if "previous" not in self.journal.node(key):
                self.journal.update(key, previous=dict(versions))


def start_journal(data: Any, name: str, target: str, resume: bool, dry_run: bool) -> Journal:
    """The rollout's journal ``name`` in the operator's directory. A run that will change
    hosts first asks the cluster's lock (`galley.lock.check_free`): a live run elsewhere or
    here is named as running, before its journal could be taken for an interrupted one."""
    if not dry_run:
        check_free(
            connect(VaultSettings.from_data(data), lock_paths(data.cluster_name)), data.cluster_name
        )
    return Journal.start(operator_dir(data) / name, target, resume)


@dataclass
class Prepared:
    """A rollout that passed its refusals: the plan's lines, whether there is work, the
    journal, the data naming the cluster (lock), and how to run it."""

    lines: list[str]
    todo: bool
    journal: Journal
    data: Any
    start: Callable[[], int]


def rollout_cli(prepare: Callable[[], Prepared], dry_run: bool) -> int:
    """The course of a rollout command: 0 done (or nothing to do), 1 stopped with a report,
    2 refused before any change."""
    try:
        prepared = prepare()
    except (RolloutError, JournalError, ApiError, LockError, VaultError) as exc:
        print(f"galley: rollout: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    for line in prepared.lines:
        print(line, flush=True)
    if dry_run or not prepared.todo:
        return 0
    data, journal = prepared.data, prepared.journal
    try:
        vault = connect(VaultSettings.from_data(data), lock_paths(data.cluster_name))
        hold(vault, data)
    except (VaultError, LockError) as exc:
        print(f"galley: rollout: {exc} (nothing was changed)", file=sys.stderr)
        return 2
    logging.getLogger("pyinfra").addHandler(logging.StreamHandler(sys.stderr))
    journal.update(status="running")
    try:
        return prepared.start()
    except ApiError as exc:
        print(f"galley: rollout: {exc}: resume with --resume ({journal.path})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"galley: rollout interrupted: resume with --resume ({journal.path})", file=sys.stderr
        )
        return 130
    except Exception as exc:  # recorded in the journal by Runner.run
        print(
            f"galley: rollout failed: {clean(f'{type(exc).__name__}: {exc}')}; see {journal.path}",
            file=sys.stderr,
        )
        return 1
