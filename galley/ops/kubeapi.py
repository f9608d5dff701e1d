"""A small Kubernetes API client for the operator's machine: the admin certificate, `requests`.

Only what galley's operations need: health, readiness and version of each apiserver, Nodes
(list, get, cordon/uncordon with a merge patch of ``spec.unschedulable``, delete) and their
heartbeat Leases, the pods bound to a node, the Eviction API and objects kept as declared
(`KubeApi.ensure`). JSON shapes and status codes are those of the Kubernetes API reference.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter


class ClientFiles(Protocol):
    """Where a client's TLS files are (e.g. `galley.ops.admin.ClientFiles`)."""

    @property
    def ca(self) -> Path: ...

    @property
    def cert(self) -> Path: ...

    @property
    def key(self) -> Path: ...


TIMEOUT = 10
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
# The Node conditions that are bad when True (the kubelet's resource pressures).
PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure")
MERGE_PATCH = "application/merge-patch+json"
_PDB = re.compile(r"disruption budget (\S+)")


class ApiError(Exception):
    """The API answered with an error status (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, message: str, body: dict | None = None) -> None:
        self.status = status
        self.body = body or {}
        super().__init__(message)


@dataclass(frozen=True)
class Eviction:
    """The answer to one eviction: ``evicted`` (or already gone), else what blocked it."""

    evicted: bool
    blocked_by: str = ""  # e.g. "PodDisruptionBudget web-pdb" or the API's message


def eviction_blocker(status: dict) -> str:
    """Name what a 429 Status from the Eviction API says blocks it (the PDB when named)."""
    causes = (status.get("details") or {}).get("causes") or []
    for cause in causes:
        if cause.get("reason") == "DisruptionBudget":
            found = _PDB.search(cause.get("message", ""))
            if found:
                return f"PodDisruptionBudget {found.group(1)}"
    return status.get("message") or "the API refused the eviction (429)"


def node_ready(node: dict) -> bool:
    """Whether the Node's Ready condition is True."""
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_unschedulable(node: dict) -> bool:
    """Whether the Node is cordoned."""
    return bool((node.get("spec") or {}).get("unschedulable"))


def _time(value: str | None) -> datetime | None:
    """An API timestamp (RFC 3339, ``Z`` or an offset, maybe with microseconds)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def node_health(node: dict | None, lease: dict | None) -> dict[str, Any]:
    """What the report reads of a worker's Node and its heartbeat Lease: ``registered``,
    ``ready`` (the Ready condition's status: "True", "False" or "Unknown"), ``reason``,
    ``since`` (when Ready last changed), ``pressure`` (the pressures that are True),
    ``cordoned``, ``heartbeat`` (the Lease's last renewal) and ``lease_seconds`` (its
    duration)."""
    if node is None:
        return {"registered": False}
    conditions = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
    ready = conditions.get("Ready") or {}
    spec = (lease or {}).get("spec") or {}
    return {
        "registered": True,
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("message") or ready.get("reason") or "",
        "since": _time(ready.get("lastTransitionTime")),
        "pressure": [
            name for name in PRESSURES if conditions.get(name, {}).get("status") == "True"
        ],
        "cordoned": node_unschedulable(node),
        "heartbeat": _time(spec.get("renewTime")),
        "lease_seconds": spec.get("leaseDurationSeconds"),
    }


def kubelet_version(node: dict) -> str:
    """The kubelet version the Node reports (``nodeInfo.kubeletVersion``), "" when absent."""
    return ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")


class _TLSAdapter(HTTPAdapter):
    """Connections with a TLS context made when the client is, not by urllib3 later.

    Once pyinfra's CLI modules are imported, gevent has patched ``ssl``; a context urllib3
    builds from the class it imported earlier then recurses forever on ``minimum_version``.
    """

    def __init__(self, files: ClientFiles) -> None:
        self.context = ssl.create_default_context(cafile=str(files.ca))
        self.context.load_cert_chain(str(files.cert), str(files.key))
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)


class KubeApi:
    """Requests to the API as the cluster's admin, through ``servers`` (https URLs): one that
    cannot be reached is skipped for the next, and the one that answered is asked first from
    then on (losing one apiserver does not stop an operation)."""

    def __init__(
        self, servers: str | Sequence[str], files: ClientFiles, timeout: float = TIMEOUT
    ) -> None:
        listed = [servers] if isinstance(servers, str) else list(servers)
        if not listed:
            raise ValueError("no apiserver to talk to")
        self.servers = [server.rstrip("/") for server in listed]
        self.session = requests.Session()
        self.session.verify = str(files.ca)
        self.session.mount("https://", _TLSAdapter(files))
        self.timeout = timeout

    @property
    def server(self) -> str:
        """The apiserver asked first (the last that answered)."""
        return self.servers[0]

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        failures = []
        for server in list(self.servers):
            try:
                answer = self.session.request(method, server + path, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failures.append(f"{server}: {exc}")
                continue
            except requests.RequestException as exc:
                raise ApiError(0, f"{method} {server}{path}: {exc}") from exc
            self.servers.remove(server)
            self.servers.insert(0, server)
            return answer
        raise ApiError(0, f"{method} {path}: no apiserver answered ({'; '.join(failures)})")

    def request(self, method: str, path: str, **kwargs: Any) -> dict:
        """Send a request; the JSON answer, or ApiError carrying the Status on failure."""
        answer = self._send(method, path, **kwargs)
        try:
            body = answer.json()
        except ValueError:
            body = {"message": answer.text.strip()}
        if answer.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiError(
                answer.status_code,
                f"{method} {path}: {answer.status_code} {message or answer.reason}",
                body if isinstance(body, dict) else None,
            )
        return body

    def healthz(self) -> tuple[bool, str]:
        """``/healthz`` (which includes the apiserver's etcd check): (ok, reason if not ok)."""
        return self._health("/healthz")

    def readyz(self) -> tuple[bool, str]:
        """``/readyz``: whether the apiserver serves requests now (ok, reason if not ok)."""
        return self._health("/readyz")

    def _health(self, path: str) -> tuple[bool, str]:
        try:
            answer = self._send("GET", path)
        except ApiError as exc:
            return False, str(exc)
        if answer.status_code == 200:
            return True, ""
        failed = [line[3:] for line in answer.text.splitlines() if line.startswith("[-]")]
        return False, f"{answer.status_code} {'; '.join(failed) or answer.text.strip()}"

    def ensure(self, collection: str, wanted: dict) -> str:
        """Create the object ``wanted`` in ``collection`` (its API path), or replace it where
        it differs; "created", "updated" or "up to date"."""
        name = wanted["metadata"]["name"]
        try:
            current = self.request("GET", f"{collection}/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.request("POST", collection, json=wanted)
            return "created"
        fields = [key for key in wanted if key not in ("apiVersion", "kind", "metadata")]
        if all(current.get(key) == wanted[key] for key in fields):
            return "up to date"
        version = current["metadata"].get("resourceVersion")
        replacement = wanted | {"metadata": wanted["metadata"] | {"resourceVersion": version}}
        self.request("PUT", f"{collection}/{name}", json=replacement)
        return "updated"

    def version(self) -> str:
        """The apiserver's ``gitVersion`` (e.g. ``v1.33.5``)."""
        return self.request("GET", "/version")["gitVersion"]

    def nodes(self) -> list[dict]:
        """Every Node."""
        return self.request("GET", "/api/v1/nodes").get("items") or []

    def node_leases(self) -> list[dict]:
        """Every Node's heartbeat Lease (``kube-node-lease``)."""
        return self.request("GET", NODE_LEASES).get("items") or []

    def node(self, name: str) -> dict:
        """One Node."""
        return self.request("GET", f"/api/v1/nodes/{name}")

    def set_unschedulable(self, name: str, value: bool) -> dict:
        """Cordon (True) or uncordon (False) a Node."""
        return self.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            json={"spec": {"unschedulable": value}},
            headers={"Content-Type": MERGE_PATCH},
        )

    def delete_node(self, name: str) -> bool:
        """Delete a Node; False when there was none (404)."""
        try:
            self.request("DELETE", f"/api/v1/nodes/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pods_on(self, node: str) -> list[dict]:
        """The pods bound to ``node``, in every namespace."""
        params = {"fieldSelector": f"spec.nodeName={node}"}
        return self.request("GET", "/api/v1/pods", params=params).get("items") or []

    def evict(self, namespace: str, pod: str) -> Eviction:
        """Ask the Eviction API to evict a pod; a 429 (a PDB forbids it now) is not an error."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction", json=body)
        except ApiError as exc:
            if exc.status == 404:
                return Eviction(True)
            if exc.status == 429:
                return Eviction(False, eviction_blocker(exc.body))
            raise
        return Eviction(True)
