"""Draining a node the way every day-2 operation does it: the Eviction API, so
PodDisruptionBudgets hold; DaemonSet and mirror (static) pods stay."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class Evicting(Protocol):
    """What a drain needs of the Kubernetes API (`galley.ops.kubeapi.KubeApi`)."""

    def pods_on(self, node: str) -> list[dict]: ...
    def evict(self, namespace: str, pod: str) -> Any: ...


def evictable(pod: dict) -> bool:
    """Whether a drain evicts this pod: not a DaemonSet's and not a mirror (static) pod."""
    metadata = pod.get("metadata") or {}
    if "kubernetes.io/config.mirror" in (metadata.get("annotations") or {}):
        return False
    return not any(ref.get("kind") == "DaemonSet" for ref in metadata.get("ownerReferences") or [])


def _pod_key(pod: dict) -> str:
    return f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"


def drain(
    api: Evicting,
    node: str,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 1.0,
) -> list[str]:
    """Evict every evictable pod of ``node`` and wait until they are gone.

    Returns [] when drained, else (after ``timeout``) each remaining pod and what holds it.
    """
    deadline = clock() + timeout
    while True:
        blocked: dict[str, str] = {}
        for pod in filter(evictable, api.pods_on(node)):
            key = _pod_key(pod)
            if pod["metadata"].get("deletionTimestamp"):
                blocked[key] = "still terminating"
                continue
            answer = api.evict(pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
            blocked[key] = "evicted, still terminating" if answer.evicted else answer.blocked_by
        if not blocked:
            return []
        if clock() >= deadline:
            return [f"{key}: {reason}" for key, reason in sorted(blocked.items())]
        sleep(interval)
