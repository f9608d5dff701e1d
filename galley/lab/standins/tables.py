"""Server-side printing of the API slice: the meta.k8s.io ``Table`` columns and cells
(lab/test only; stdlib only).

``kubectl get`` asks for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``)
and prints the columns of priority 0, all of them with ``-o wide``. The columns and how their
cells are computed follow the kube-apiserver's printers for Node, Pod, PodDisruptionBudget and
ClusterRoleBinding;
the server always fills the wide columns. Pods are printed from their status as a kubelet
reports it (init containers are not modelled: the stand-ins run no pods).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Cells = Callable[[dict, datetime.datetime], list[Any]]


@dataclass(frozen=True)
class Column:
    """A TableColumnDefinition."""

    name: str
    description: str
    type: str = "string"
    format: str = ""
    priority: int = 0  # 1: shown with ``-o wide`` only

    def definition(self) -> dict:
        """The column's JSON form."""
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Printer:
    """The columns of a resource's Table and the function computing a row's cells."""

    columns: tuple[Column, ...]
    cells: Cells
    conditions: Callable[[dict], list[dict]] = lambda obj: []


_NAME = Column("Name", "The name of the object, unique in its namespace.", format="name")
_AGE = Column("Age", "How long ago the object was created.")


def human_duration(seconds: float) -> str:
    """A duration the way kubectl shows ages: two or three significant figures."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 120:
        return f"{max(whole, 0)}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if minutes < 10:
        return f"{minutes}m{whole % 60}s" if whole % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _since(stamp: str | None, now: datetime.datetime) -> str:
    """The age of an RFC 3339 timestamp, ``<unknown>`` without one."""
    if not stamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return "<unknown>"
    return human_duration((now - then).total_seconds())


def _age(obj: dict, now: datetime.datetime) -> str:
    return _since(obj["metadata"].get("creationTimestamp"), now)


# --- nodes -----------------------------------------------------------------------------------


def _node_cells(node: dict, now: datetime.datetime) -> list[Any]:
    status, spec = node.get("status") or {}, node.get("spec") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready")
    shown = ["Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"]
    if spec.get("unschedulable"):
        shown.append("SchedulingDisabled")
    roles = set()
    for key, value in (node["metadata"].get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key.partition("/")[2]:
            roles.add(key.partition("/")[2])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        found = [a.get("address") for a in status.get("addresses") or [] if a.get("type") == kind]
        return found[0] if found else "<none>"

    return [
        node["metadata"]["name"],
        ",".join(shown),
        ",".join(sorted(roles)) or "<none>",
        _age(node, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NODES = Printer(
    (
        _NAME,
        Column("Status", "The status of the node."),
        Column("Roles", "The roles of the node."),
        _AGE,
        Column("Version", "The kubelet's version."),
        Column("Internal-IP", "The node's first InternalIP address.", priority=1),
        Column("External-IP", "The node's first ExternalIP address.", priority=1),
        Column("OS-Image", "The operating system the node reports.", priority=1),
        Column("Kernel-Version", "The kernel version the node reports.", priority=1),
        Column("Container-Runtime", "The container runtime the node reports.", priority=1),
    ),
    _node_cells,
)


# --- pods ------------------------------------------------------------------------------------


def _pod_cells(pod: dict, now: datetime.datetime) -> list[Any]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    ready = restarts = 0
    last_restart = ""
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        finished = ((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        last_restart = max(last_restart, finished or "")
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None:
            reason = terminated.get("reason") or (
                f"Signal:{terminated['signal']}"
                if terminated.get("signal")
                else f"ExitCode:{terminated.get('exitCode', 0)}"
            )
        elif container.get("ready") and "running" in state:
            ready += 1
    if pod["metadata"].get("deletionTimestamp") and status.get("phase") not in (
        "Succeeded",
        "Failed",
    ):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    shown_restarts = str(restarts)
    if restarts and last_restart:
        shown_restarts = f"{restarts} ({_since(last_restart, now)} ago)"
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    passed = sum(1 for gate in gates if conditions.get(gate.get("conditionType")) == "True")
    return [
        pod["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        shown_restarts,
        _age(pod, now),
        ((status.get("podIPs") or [{}])[0]).get("ip") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{passed}/{len(gates)}" if gates else "<none>",
    ]


def _pod_conditions(pod: dict) -> list[dict]:
    """A finished pod's row is marked Completed."""
    messages = {"Succeeded": "The pod has completed successfully.", "Failed": "The pod failed."}
    phase = (pod.get("status") or {}).get("phase")
    if phase not in messages:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": messages[phase]}]


PODS = Printer(
    (
        _NAME,
        Column("Ready", "Ready containers of the pod, of all its containers."),
        Column("Status", "The aggregate status of the pod's containers."),
        Column("Restarts", "How often the pod's containers restarted, and when last."),
        _AGE,
        Column("IP", "The pod's IP address.", priority=1),
        Column("Node", "The node the pod is bound to.", priority=1),
        Column("Nominated Node", "The node the scheduler nominated for the pod.", priority=1),
        Column("Readiness Gates", "Readiness gates passed, of all of them.", priority=1),
    ),
    _pod_cells,
    _pod_conditions,
)


# --- pod disruption budgets ------------------------------------------------------------------


def _budget_cells(pdb: dict, now: datetime.datetime) -> list[Any]:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}

    def bound(name: str) -> str:
        return "N/A" if spec.get(name) is None else str(spec[name])

    return [
        pdb["metadata"]["name"],
        bound("minAvailable"),
        bound("maxUnavailable"),
        int(status.get("disruptionsAllowed") or 0),
        _age(pdb, now),
    ]


PODDISRUPTIONBUDGETS = Printer(
    (
        _NAME,
        Column("Min Available", "The minimum number of pods that must be available."),
        Column("Max Unavailable", "The maximum number of pods that may be unavailable."),
        Column("Allowed Disruptions", "How many pods may be disrupted now.", type="integer"),
        _AGE,
    ),
    _budget_cells,
)


def _binding_cells(binding: dict, now: datetime.datetime) -> list[Any]:
    role = binding.get("roleRef") or {}
    return [
        binding["metadata"]["name"],
        f"{role.get('kind')}/{role.get('name')}",
        _age(binding, now),
    ]


CLUSTERROLEBINDINGS = Printer(
    (_NAME, Column("Role", "The role the subjects are bound to."), _AGE),
    _binding_cells,
)


def table(
    printer: Printer,
    objects: list[dict],
    resource_version: str,
    api_version: str,
    include: str,
    now: datetime.datetime,
) -> dict:
    """A Table of ``objects`` (each with kind and apiVersion) in meta.k8s.io ``api_version``;
    each row carries the object (``include`` ``Object``), its metadata only (``Metadata``,
    the default) or nothing (``None``)."""
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        conditions = printer.conditions(obj)
        if conditions:
            row["conditions"] = conditions
        if include == "Object":
            row["object"] = obj
        elif include in ("Metadata", ""):
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": api_version,
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [column.definition() for column in printer.columns],
        "rows": rows,
    }
