"""The kubelet stand-in's node status loop (lab/test only; stdlib only).

Registers the Node (``POST /api/v1/nodes``; an existing one is taken over) with the kubelet's
kubeconfig identity, then every ``HEARTBEAT_SECONDS`` patches its status (strategic merge
patch on ``/api/v1/nodes/<name>/status``): addresses, ``nodeInfo`` with the kubelet's version,
and the conditions with a fresh ``lastHeartbeatTime``. Ready is True, or False (reason
KubeletNotReady) for a build that never becomes healthy. A Node deleted meanwhile is registered
again. When the loop stops (SIGTERM) nothing is posted any more: the Node turns Ready Unknown
only once the heartbeat is older than the apiserver stand-in's grace period (see ``api``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import ssl
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .clock import timestamp
from .keepalive import KeptConnection

HEARTBEAT_SECONDS = 2.0
_PRESSURE = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
)


def _first_line(path: str, prefix: str = "") -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip().strip('"')
    except OSError:
        pass
    return ""


@dataclass
class NodeAgent:
    """What the kubelet reports about its node, and where."""

    server: str  # https://host:port
    context: ssl.SSLContext
    name: str
    version: str
    node_ip: str | None
    port: int  # the kubelet's HTTPS port
    ready: bool
    started: str = field(default_factory=timestamp)
    _kept: KeptConnection = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A real kubelet keeps its connection to the apiserver (or the node-local proxy) open.
        url = urlsplit(self.server)
        self._kept = KeptConnection(
            lambda: http.client.HTTPSConnection(
                url.hostname, url.port or 443, context=self.context, timeout=5
            )
        )

    def _request(self, method: str, path: str, body: dict, content_type: str) -> int:
        status, answer = self._kept.exchange(
            method, path, json.dumps(body), {"Content-Type": content_type}
        )
        if status >= 400 and status not in (404, 409):
            message = answer.decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(answer).get("message", message)
            raise OSError(f"{method} {path}: HTTP {status}: {message}")
        return status

    def status(self) -> dict:
        """The node status the kubelet posts, heartbeat now."""
        now = timestamp()
        ready = {
            "type": "Ready",
            "status": "True" if self.ready else "False",
            "lastHeartbeatTime": now,
            "lastTransitionTime": self.started,
            "reason": "KubeletReady" if self.ready else "KubeletNotReady",
            "message": "kubelet is posting ready status"
            if self.ready
            else "container runtime status check may not have completed yet",
        }
        conditions = [
            {
                "type": kind,
                "status": "False",
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.started,
                "reason": reason,
                "message": message,
            }
            for kind, reason, message in _PRESSURE
        ]
        addresses = [{"type": "InternalIP", "address": self.node_ip}] if self.node_ip else []
        return {
            "addresses": [*addresses, {"type": "Hostname", "address": self.name}],
            "conditions": [*conditions, ready],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kernelVersion": os.uname().release,
                "osImage": _first_line("/etc/os-release", "PRETTY_NAME="),
                "machineID": _first_line("/etc/machine-id"),
                "bootID": _first_line("/proc/sys/kernel/random/boot_id"),
                "systemUUID": "",
                "containerRuntimeVersion": "",
                "kubeletVersion": self.version,
            },
        }

    def register(self) -> None:
        """Create the Node (an existing one is kept and gets this kubelet's status)."""
        labels = {
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
        }
        node = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {},
            "status": self.status(),
        }
        self._request("POST", "/api/v1/nodes", node, "application/json")

    def heartbeat(self) -> bool:
        """Post the status; False if the Node does not exist."""
        path = f"/api/v1/nodes/{self.name}/status"
        body = {"status": self.status()}
        return self._request("PATCH", path, body, "application/strategic-merge-patch+json") != 404

    def run(self, stop: threading.Event) -> None:
        """Register, then heartbeat until ``stop`` is set; problems are logged and retried."""
        registered, last_error = False, None
        while not stop.is_set():
            try:
                if not registered:
                    self.register()
                registered = self.heartbeat()
                if last_error is not None:
                    print(f"node {self.name}: status posted again", file=sys.stderr, flush=True)
                last_error = None
            except (OSError, http.client.HTTPException) as exc:
                if str(exc) != last_error:
                    print(f"node {self.name}: {exc}", file=sys.stderr, flush=True)
                last_error = str(exc)
            stop.wait(HEARTBEAT_SECONDS)
