"""The slice of the Kubernetes API the kube-apiserver stand-in serves (lab/test only; stdlib only).

What a rolling kubelet upgrade needs, with the JSON shapes, status codes and v1 ``Status``
errors of the Kubernetes API reference:

- nodes: ``GET /api/v1/nodes`` (NodeList), ``POST`` (201; 409 AlreadyExists), and on
  ``/api/v1/nodes/{name}`` and its ``/status``: ``GET``, ``PUT`` (404 if missing; 409 Conflict
  on a stale ``metadata.resourceVersion``) and ``PATCH`` (``application/merge-patch+json`` or
  ``application/strategic-merge-patch+json``, which merges ``conditions`` and ``addresses`` by
  ``type``). Writes to the node keep its status, writes to ``/status`` keep the rest.
  ``DELETE /api/v1/nodes/{name}``: 200 with a Success ``Status`` (``details``: name, kind
  ``nodes``, uid), as for every object deleted at once; 404 NotFound when there is none.
- pods: ``GET /api/v1/pods`` and ``/api/v1/namespaces/{ns}/pods`` (PodList; ``fieldSelector``
  on ``spec.nodeName``, ``metadata.name``, ``metadata.namespace``, ``status.phase`` and
  equality ``labelSelector``), ``POST`` to seed pods (the stand-ins run no pods: a pod without
  a status is stored Running and Ready, each container running and ready, as a kubelet would
  report it), ``GET``/``DELETE`` ``.../pods/{name}``.
- evictions: ``POST .../pods/{name}/eviction`` (policy/v1 Eviction): 429 TooManyRequests with a
  ``DisruptionBudget`` cause naming the PodDisruptionBudget while it forbids the disruption,
  else the pod is deleted and the answer is a 201 Success Status.
- poddisruptionbudgets (policy/v1): list (all or per namespace), ``POST``, ``GET``, ``DELETE``.
  Their status (expectedPods, currentHealthy, desiredHealthy, disruptionsAllowed) is computed
  when read, as the disruption controller would keep it: pods selected by ``spec.selector``
  (``matchLabels``, ``matchExpressions``), healthy when Running and Ready; ``minAvailable`` or
  ``maxUnavailable`` as a count or a percentage (rounded up).
- tables: any answer but a Status comes as a meta.k8s.io ``Table`` (v1 or v1beta1) to clients
  asking for one (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``, what ``kubectl
  get`` sends), with the kube-apiserver's columns (``tables``) and each row's object as
  ``includeObject`` says (``Metadata``: a PartialObjectMetadata, the default; ``Object``;
  ``None``). Plain JSON otherwise; an ``Accept`` header with neither is 406 NotAcceptable.
- discovery: the documents of the ``discovery`` module, on the paths given to :class:`KubeApi`
  (``/version``, ``/api``, ``/apis`` and below), derived from :data:`RESOURCES` (the verbs
  are :data:`VERBS` and the subresources' own).

Objects live in the real etcd as JSON below the apiserver's key layout
(``<etcd-prefix>/minions/<node>``, ``/pods/<ns>/<name>``, ``/poddisruptionbudgets/<ns>/<name>``),
so every apiserver stand-in of a cluster serves the same state and it survives restarts.
``metadata.resourceVersion`` is the etcd revision that last modified the object; updates are
compare-and-swap transactions on it.

The node lifecycle controller is not run: a Node whose Ready condition has a
``lastHeartbeatTime`` older than ``NODE_GRACE_SECONDS`` is served with Ready ``Unknown``
(reason ``NodeStatusUnknown``), computed when read.

Authorization: group ``system:masters`` may do everything. A node identity (user
``system:node:<name>``, group ``system:nodes``) may read nodes and pods, and create, update and
patch its own Node only (the NodeRestriction answer otherwise). Everyone else gets 403. Any
authenticated user may read discovery (RBAC's system:discovery); anonymous users only
``/healthz``, ``/livez``, ``/readyz`` and ``/version`` (system:public-info-viewer).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import tables
from .clock import now as _now
from .clock import timestamp
from .etcd import EtcdClient, EtcdError
from .serve import Answer, Request, Route

JSON = "application/json"
NODE_GRACE_SECONDS = 10.0
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Lists that a strategic merge patch merges item by item, by this key.
_MERGE_KEYS = {"conditions": "type", "addresses": "type"}
_PATH = re.compile(
    r"^/(?P<group>api/v1|apis/policy/v1|apis/rbac\.authorization\.k8s\.io/v1)"
    r"(?:/namespaces/(?P<namespace>[^/]+))?"
    r"/(?P<resource>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?/?$"
)


# The verbs every resource of the slice serves (watch and deletecollection are not served).
VERBS = ("create", "delete", "get", "list", "patch", "update")


@dataclass(frozen=True)
class Subresource:
    """A subresource: its verbs and what it answers with (by default its resource's kind)."""

    name: str
    verbs: tuple[str, ...]
    kind: str = ""
    api_version: str = ""


@dataclass(frozen=True)
class Resource:
    """A resource type of the slice: its kind, API group, etcd key segment and discovery names."""

    plural: str
    singular: str
    kind: str
    api_version: str
    key: str
    namespaced: bool
    fields: tuple[str, ...]  # fieldSelector labels it supports
    printer: tables.Printer  # its server-side Table
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        """The version within the group."""
        return self.api_version.rpartition("/")[2]

    @property
    def path(self) -> str:
        """Where its group version is served: ``/api/v1`` or ``/apis/<group>/<version>``."""
        return f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"

    def subresource(self, name: str | None) -> Subresource | None:
        """The subresource called ``name``, if it has one."""
        return next((sub for sub in self.subresources if sub.name == name), None)


RESOURCES = {
    resource.plural: resource
    for resource in (
        Resource(
            "nodes",
            "node",
            "Node",
            "v1",
            "minions",
            False,
            ("metadata.name", "spec.unschedulable"),
            tables.NODES,
            short_names=("no",),
            subresources=(Subresource("status", ("get", "patch", "update")),),
        ),
        Resource(
            "pods",
            "pod",
            "Pod",
            "v1",
            "pods",
            True,
            ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
            tables.PODS,
            short_names=("po",),
            categories=("all",),
            subresources=(Subresource("eviction", ("create",), "Eviction", "policy/v1"),),
        ),
        Resource(
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            "policy/v1",
            "poddisruptionbudgets",
            True,
            ("metadata.name", "metadata.namespace"),
            tables.PODDISRUPTIONBUDGETS,
            short_names=("pdb",),
        ),
        # Stored and served as given; authorization here stays the masters' and the Node
        # authorizer's (the stand-in does not evaluate RBAC rules).
        Resource(
            "clusterrolebindings",
            "clusterrolebinding",
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io/v1",
            "clusterrolebindings",
            False,
            ("metadata.name",),
            tables.CLUSTERROLEBINDINGS,
        ),
    )
}
_FIELD_DEFAULTS = {"spec.unschedulable": "false"}


class ApiError(Exception):
    """An answer with a v1 Status of failure."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        """The v1 Status object."""
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _not_found(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "kind": resource.plural}
    if resource.group:
        details["group"] = resource.group
    return ApiError(404, "NotFound", f'{resource.plural} "{name}" not found', details)


# --- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, merge_keys: dict[str, str] | None = None) -> Any:
    """RFC 7386 JSON merge patch; with ``merge_keys``, a strategic merge patch for those lists."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif merge_keys and key in merge_keys and isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, merge_keys[key], merge_keys)
        else:
            result[key] = merge_patch(result.get(key), value, merge_keys)
    return result


def _merge_list(target: Any, patch: list, by: str, merge_keys: dict[str, str]) -> list:
    merged = list(target) if isinstance(target, list) else []
    for item in patch:
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(by) == item.get(by)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(item)
        else:
            merged[index] = merge_patch(merged[index], item, merge_keys)
    return merged


# --- selectors -------------------------------------------------------------------------------


def _requirements(selector: str, what: str) -> list[tuple[str, bool, str]]:
    """``a=b,c!=d`` as (key, equal, value) triples."""
    found = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {what} {part!r}")
        found.append((match.group(1), match.group(2) != "!=", match.group(3)))
    return found


def _field(obj: dict, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return _FIELD_DEFAULTS.get(path, "")
    return str(value).lower() if isinstance(value, bool) else str(value)


def _label_selector_matches(selector: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector: matchLabels and matchExpressions (None selects nothing)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(operator, False)
        if not ok:
            return False
    return True


# --- storage ---------------------------------------------------------------------------------


class Store:
    """Objects as JSON in etcd below ``prefix``, with resourceVersion = etcd mod revision."""

    def __init__(self, etcd: EtcdClient, prefix: str = "/registry") -> None:
        self.etcd, self.prefix = etcd, prefix.rstrip("/")

    def _key(self, resource: Resource, namespace: str | None, name: str = "") -> str:
        """``<prefix>/<resource>/[<namespace>/]<name>``; without a name, the prefix of a list."""
        parts = [self.prefix, resource.key, namespace if resource.namespaced else None, name]
        return "/".join(p for p in parts if p is not None and p != "") + ("" if name else "/")

    @staticmethod
    def _load(value: bytes, revision: int) -> dict:
        obj = json.loads(value)
        obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
        return obj

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict:
        """The object, or 404."""
        found, _ = self.etcd.range(self._key(resource, namespace, name))
        if not found:
            raise _not_found(resource, name)
        return self._load(found[0].value, found[0].mod_revision)

    def list(self, resource: Resource, namespace: str | None) -> tuple[list[dict], int]:
        """Every object (of ``namespace`` if given) and the store's revision."""
        prefix = self._key(resource, namespace)
        found, revision = self.etcd.range(prefix, prefix=True)
        items = [self._load(kv.value, kv.mod_revision) for kv in found]
        return sorted(
            items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        ), revision

    @staticmethod
    def _dump(obj: dict) -> bytes:
        stored = {**obj, "metadata": dict(obj["metadata"])}
        stored["metadata"].pop("resourceVersion", None)
        return json.dumps(stored, separators=(",", ":"), sort_keys=True).encode()

    def create(self, resource: Resource, obj: dict) -> dict:
        """Store a new object; 409 AlreadyExists if its name is taken."""
        metadata = obj["metadata"]
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp())
        key = self._key(resource, metadata.get("namespace"), metadata["name"])
        revision = self.etcd.put_if(key, self._dump(obj), 0)
        if revision is None:
            details = {"name": metadata["name"], "kind": resource.plural}
            message = f'{resource.plural} "{metadata["name"]}" already exists'
            raise ApiError(409, "AlreadyExists", message, details)
        metadata["resourceVersion"] = str(revision)
        return obj

    def update(
        self, resource: Resource, namespace: str | None, name: str, change: Callable[[dict], dict]
    ) -> dict:
        """Replace the object by ``change(current)``, retrying if someone else wrote it meanwhile.

        ``change`` raises ApiError 409 Conflict when its result names another resourceVersion.
        """
        key = self._key(resource, namespace, name)
        for _ in range(10):
            current = self.get(resource, namespace, name)
            revision = int(current["metadata"]["resourceVersion"])
            new = change(json.loads(json.dumps(current)))
            wanted = new.get("metadata", {}).get("resourceVersion")
            if wanted not in (None, "", str(revision)):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    {"name": name, "kind": resource.plural},
                )
            for fixed in ("name", "namespace", "uid", "creationTimestamp"):
                if fixed in current["metadata"]:
                    new.setdefault("metadata", {})[fixed] = current["metadata"][fixed]
            written = self.etcd.put_if(key, self._dump(new), revision)
            if written is not None:
                new["metadata"]["resourceVersion"] = str(written)
                return new
        raise ApiError(409, "Conflict", f'{resource.plural} "{name}": too many concurrent writes')

    def delete(self, resource: Resource, namespace: str | None, name: str) -> dict:
        """Delete the object and return it; 404 if it does not exist."""
        obj = self.get(resource, namespace, name)
        if not self.etcd.delete(self._key(resource, namespace, name)):
            raise _not_found(resource, name)
        return obj


# --- policy ----------------------------------------------------------------------------------


def pod_ready(pod: dict) -> bool:
    """Running, Ready and not being deleted: what the disruption controller counts as healthy."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return (
        status.get("phase") == "Running" and ready and not pod["metadata"].get("deletionTimestamp")
    )


def _scaled(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def disruption_status(pdb: dict, pods: list[dict]) -> dict:
    """The status the disruption controller would give ``pdb`` over ``pods`` (its namespace)."""
    spec = pdb.get("spec") or {}
    selected = [
        p
        for p in pods
        if _label_selector_matches(spec.get("selector"), p["metadata"].get("labels") or {})
    ]
    expected = len(selected)
    healthy = sum(1 for p in selected if pod_ready(p))
    if spec.get("minAvailable") is not None:
        desired = _scaled(spec["minAvailable"], expected)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
    else:
        desired = 0
    allowed = max(0, healthy - desired)
    return {
        "observedGeneration": 1,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [
            {
                "type": "DisruptionAllowed",
                "status": "True" if allowed else "False",
                "reason": "SufficientPods" if allowed else "InsufficientPods",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": pdb["metadata"].get("creationTimestamp", timestamp()),
            }
        ],
    }


def _running(pod: dict) -> dict:
    """The status a kubelet reports for ``pod`` once all its containers run and are ready."""
    now = timestamp()
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "startTime": now,
        "containerStatuses": [
            {
                "name": container.get("name", ""),
                "image": container.get("image", ""),
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for container in containers
        ],
    }


def node_as_seen(node: dict, now: datetime.datetime | None = None) -> dict:
    """``node`` with Ready Unknown if the kubelet's last heartbeat is older than the grace."""
    now = now or _now()
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "Ready" or condition.get("status") == "Unknown":
            continue
        try:
            beat = datetime.datetime.fromisoformat(condition.get("lastHeartbeatTime", ""))
        except ValueError:
            continue
        grace = datetime.timedelta(seconds=NODE_GRACE_SECONDS)
        if now - beat > grace:
            condition.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=timestamp(beat + grace),
            )
    return node


# --- the API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One API request, parsed."""

    verb: str  # get list create update patch delete
    resource: Resource
    namespace: str | None
    name: str | None
    sub: str | None
    request: Request

    @property
    def user(self) -> str:
        return self.request.common_name or "system:anonymous"

    def body(self) -> dict:
        try:
            body = json.loads(self.request.body or b"null")
        except json.JSONDecodeError as exc:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        return body


def _not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def _call(request: Request) -> _Call:
    missing = ApiError(404, "NotFound", "the server could not find the requested resource", {})
    match = _PATH.match(request.path)
    resource = RESOURCES.get(match.group("resource")) if match else None
    if match is None or resource is None:
        raise missing
    namespace, name, sub = match.group("namespace", "name", "sub")
    subresource = resource.subresource(sub)
    if (
        f"/{match.group('group')}" != resource.path
        or (namespace is not None and not resource.namespaced)
        or (resource.namespaced and namespace is None and (name or request.method != "GET"))
        or (sub is not None and subresource is None)
    ):
        raise missing
    verbs = {
        ("GET", False): "list",
        ("POST", False): "create",
        ("GET", True): "get",
        ("PUT", True): "update",
        ("PATCH", True): "patch",
        ("DELETE", True): "delete",
        ("POST", True): "create",
    }
    verb = verbs.get((request.method, name is not None))
    if (
        verb is None
        or (subresource is not None and verb not in subresource.verbs)
        or (subresource is None and verb == "create" and name is not None)
    ):
        raise _not_allowed()
    return _Call(verb, resource, namespace, name, sub, request)


def _authorize(call: _Call, name: str | None) -> None:
    """RBAC for masters, the Node authorizer and NodeRestriction for kubelets; 403 otherwise."""
    request = call.request
    if "system:masters" in request.organizations:
        return
    node = (
        call.user.removeprefix("system:node:") if "system:nodes" in request.organizations else None
    )
    writes = call.verb in ("create", "update", "patch")
    if (
        node is not None
        and call.resource.plural in ("nodes", "pods")
        and call.verb in ("get", "list")
    ):
        return
    if node is not None and call.resource.plural == "nodes" and writes:
        if name == node:
            return
        raise ApiError(
            403,
            "Forbidden",
            f'nodes "{name}" is forbidden: node "{node}" is not allowed to modify node "{name}"',
            {"name": name, "kind": "nodes"},
        )
    plural = call.resource.plural + (f"/{call.sub}" if call.sub else "")
    scope = f'in the namespace "{call.namespace}"' if call.namespace else "at the cluster scope"
    subject = f'{call.resource.plural} "{name}"' if name else call.resource.plural
    details: dict = {"kind": call.resource.plural}
    if name:
        details["name"] = name
    raise ApiError(
        403,
        "Forbidden",
        f'{subject} is forbidden: User "{call.user}" cannot {call.verb} resource "{plural}" '
        f'in API group "{call.resource.group}" {scope}',
        details,
    )


# Accept clauses that ask for plain JSON (no conversion target).
_JSON_RANGES = ("application/json", "application/*", "*/*")
# What an object or list can be answered as: itself, or a meta.k8s.io Table of that version.
_TABLES: dict[tuple[str, str, str] | None, str | None] = {
    None: None,
    ("meta.k8s.io", "v1", "Table"): "meta.k8s.io/v1",
    ("meta.k8s.io", "v1beta1", "Table"): "meta.k8s.io/v1beta1",
}
_INCLUDE_OBJECT = ("", "None", "Metadata", "Object")
# Non-resource paths anyone may read (RBAC's system:public-info-viewer); the rest of discovery
# needs an authenticated user (system:discovery).
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")


T = TypeVar("T")


def negotiate(accept: str, offers: dict[tuple[str, str, str] | None, T]) -> T:
    """The offer that the best clause of an ``Accept`` header can have (by quality, then order).

    A clause with ``as``, ``g`` and ``v`` parameters asks for that conversion target
    (group, version, kind) in JSON; one without asks for the plain JSON document (key None).
    Clauses nobody offers are skipped, as the kube-apiserver does; none left is 406.
    """
    clauses = []
    for order, clause in enumerate((accept or "*/*").split(",")):
        media, *pairs = (part.strip() for part in clause.split(";"))
        params = {key.strip(): value.strip() for key, _, value in (p.partition("=") for p in pairs)}
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            clauses.append((-quality, order, media.lower(), params))
    for _, _, media, params in sorted(clauses):
        if "as" in params:
            target = (params.get("g", ""), params.get("v", ""), params["as"])
            if media == "application/json" and target in offers:
                return offers[target]
        elif media in _JSON_RANGES and None in offers:
            return offers[None]
    raise ApiError(
        406, "NotAcceptable", "only the following media types are accepted: application/json"
    )


def _authorize_path(request: Request) -> None:
    """Discovery is for authenticated users; anonymous ones may read the public paths only."""
    if request.common_name is not None or request.path in PUBLIC_PATHS:
        return
    raise ApiError(
        403,
        "Forbidden",
        f'forbidden: User "system:anonymous" cannot {request.method.lower()} path "{request.path}"',
        {},
    )


class KubeApi:
    """The request handler of the API slice, over a :class:`Store`; ``paths`` answer the
    non-resource GET paths (discovery, see the ``discovery`` module)."""

    def __init__(self, store: Store, paths: dict[str, Route] | None = None) -> None:
        self.store, self.paths = store, dict(paths or {})

    def __call__(self, request: Request) -> Answer:
        """Answer one request: a path of ``paths``, or any path below /api or /apis."""
        try:
            route = self.paths.get(request.path.rstrip("/") or "/")
            if route is not None:
                _authorize_path(request)
                if request.method != "GET":
                    raise _not_allowed()
                return route(request)
            status, answer = self._answer(request)
        except ApiError as exc:
            status, answer = exc.code, exc.status()
        except EtcdError as exc:
            status, answer = 500, ApiError(500, "InternalError", f"etcd: {exc}").status()
        return status, JSON, json.dumps(answer).encode()

    def _answer(self, request: Request) -> tuple[int, dict]:
        call = _call(request)
        body = call.body() if call.verb in ("create", "update", "patch") else None
        name = call.name
        if call.verb == "create" and call.sub is None:
            name = (body.get("metadata") or {}).get("name") if body else None
        _authorize(call, name)
        table = negotiate(request.headers.get("accept", ""), _TABLES)
        include = request.query.get("includeObject", "")
        if table is not None and include not in _INCLUDE_OBJECT:
            raise ApiError(
                400,
                "BadRequest",
                "Unable to convert to Table as requested: includeObject: Invalid value: "
                f"\"{include}\": must be 'Metadata', 'Object', 'None', or empty",
            )
        if call.sub == "eviction":
            status, answer = self._evict(call, body or {})
        else:
            status, answer = getattr(self, f"_{call.verb}")(call, body)
        if table is not None and answer.get("kind") != "Status":
            answer = self._table(call.resource, answer, table, include)
        return status, answer

    @staticmethod
    def _table(resource: Resource, answer: dict, api_version: str, include: str) -> dict:
        """``answer`` (an object or a list of them) as a Table of meta.k8s.io ``api_version``."""
        objects = [answer]
        if "items" in answer:
            kind = {"kind": resource.kind, "apiVersion": resource.api_version}
            objects = [{**kind, **item} for item in answer["items"]]
        version = answer["metadata"].get("resourceVersion", "")
        return tables.table(resource.printer, objects, version, api_version, include, _now())

    def _present(self, resource: Resource, obj: dict, pods: list[dict] | None = None) -> dict:
        obj = {"kind": resource.kind, "apiVersion": resource.api_version, **obj}
        if resource.plural == "nodes":
            return node_as_seen(obj)
        if resource.plural == "poddisruptionbudgets":
            if pods is None:
                pods = self.store.list(RESOURCES["pods"], obj["metadata"]["namespace"])[0]
            obj["status"] = disruption_status(obj, pods)
        return obj

    def _get(self, call: _Call, body: None) -> tuple[int, dict]:
        return 200, self._present(
            call.resource, self.store.get(call.resource, call.namespace, call.name)
        )

    def _list(self, call: _Call, body: None) -> tuple[int, dict]:
        query = call.request.query
        fields = _requirements(query.get("fieldSelector", ""), "fieldSelector")
        labels = _requirements(query.get("labelSelector", ""), "labelSelector")
        for field, _, _ in fields:
            if field not in call.resource.fields:
                raise ApiError(400, "BadRequest", f"field label not supported: {field}")
        items, revision = self.store.list(call.resource, call.namespace)
        items = [
            item
            for item in items
            if all((_field(item, f) == v) == eq for f, eq, v in fields)
            and all(
                ((item["metadata"].get("labels") or {}).get(k) == v) == eq for k, eq, v in labels
            )
        ]
        by_namespace: dict[str, list[dict]] = {}
        if call.resource.plural == "poddisruptionbudgets":
            for pod in self.store.list(RESOURCES["pods"], call.namespace)[0]:
                by_namespace.setdefault(pod["metadata"]["namespace"], []).append(pod)
        presented = []
        for item in items:
            pods = by_namespace.get(item["metadata"].get("namespace", ""), [])
            shown = self._present(call.resource, item, pods)
            shown.pop("kind"), shown.pop("apiVersion")
            presented.append(shown)
        return 200, {
            "kind": f"{call.resource.kind}List",
            "apiVersion": call.resource.api_version,
            "metadata": {"resourceVersion": str(revision)},
            "items": presented,
        }

    def _check_body(self, call: _Call, body: dict) -> dict:
        resource = call.resource
        if body.get("kind", resource.kind) != resource.kind:
            raise ApiError(
                400, "BadRequest", f"expected kind {resource.kind}, got {body.get('kind')}"
            )
        metadata = body.setdefault("metadata", {})
        if resource.namespaced and metadata.setdefault("namespace", call.namespace) != (
            call.namespace
        ):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if not metadata.get("name"):
            raise ApiError(
                422,
                "Invalid",
                f'{resource.kind} "" is invalid: metadata.name: Required value: name or '
                "generateName is required",
                {
                    "kind": resource.kind,
                    "causes": [{"reason": "FieldValueRequired", "field": "metadata.name"}],
                },
            )
        if call.name is not None and metadata["name"] != call.name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({metadata['name']}) does not match the name on the URL "
                f"({call.name})",
            )
        body.pop("kind", None), body.pop("apiVersion", None)
        return body

    def _create(self, call: _Call, body: dict) -> tuple[int, dict]:
        obj = self._check_body(call, body)
        if call.resource.plural == "pods" and "status" not in obj:
            obj["status"] = _running(obj)
        return 201, self._present(call.resource, self.store.create(call.resource, obj))

    def _write(self, call: _Call, change: Callable[[dict], dict]) -> tuple[int, dict]:
        """Update with ``change``; a node's status and the rest are written separately."""

        def scoped(current: dict) -> dict:
            new = change(current)
            if call.resource.plural == "nodes" and call.sub == "status":
                version = (new.get("metadata") or {}).get("resourceVersion")
                metadata = {**current["metadata"], "resourceVersion": version}
                new = {**current, "metadata": metadata, "status": new.get("status")}
            elif call.resource.plural == "nodes":
                new["status"] = current.get("status")
            return {
                k: v for k, v in new.items() if k not in ("kind", "apiVersion") and v is not None
            }

        updated = self.store.update(call.resource, call.namespace, call.name, scoped)
        return 200, self._present(call.resource, updated)

    def _update(self, call: _Call, body: dict) -> tuple[int, dict]:
        obj = self._check_body(call, body)
        return self._write(call, lambda current: obj)

    def _patch(self, call: _Call, body: dict) -> tuple[int, dict]:
        content_type = call.request.content_type
        if content_type not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}",
            )
        keys = _MERGE_KEYS if content_type == STRATEGIC_MERGE_PATCH else None
        return self._write(call, lambda current: merge_patch(current, body, keys))

    def _delete(self, call: _Call, body: None) -> tuple[int, dict]:
        """200 with the deleted pod (graceful deletion answers with the object); a Node or a
        budget (deleted at once, no finalizers) answers with a Success Status naming it."""
        deleted = self.store.delete(call.resource, call.namespace, call.name)
        if call.resource.plural == "pods":
            return 200, self._present(call.resource, deleted)
        details = {"name": call.name, "kind": call.resource.plural}
        if call.resource.group:
            details["group"] = call.resource.group
        details["uid"] = deleted["metadata"].get("uid", "")
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def _evict(self, call: _Call, eviction: dict) -> tuple[int, dict]:
        """policy/v1 Eviction: delete the pod unless a PodDisruptionBudget forbids it (429)."""
        named = (eviction.get("metadata") or {}).get("name")
        if named and named != call.name:
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
        pods_resource = RESOURCES["pods"]
        pod = self.store.get(pods_resource, call.namespace, call.name)
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed"):
            pods = self.store.list(pods_resource, call.namespace)[0]
            labels = pod["metadata"].get("labels") or {}
            budgets = [
                pdb
                for pdb in self.store.list(RESOURCES["poddisruptionbudgets"], call.namespace)[0]
                if _label_selector_matches((pdb.get("spec") or {}).get("selector"), labels)
            ]
            if len(budgets) > 1:
                raise ApiError(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support.",
                )
            if budgets:
                self._check_budget(budgets[0], disruption_status(budgets[0], pods), pod_ready(pod))
        self.store.delete(pods_resource, call.namespace, call.name)
        return 201, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    @staticmethod
    def _check_budget(pdb: dict, status: dict, healthy: bool) -> None:
        """429 if evicting a (healthy or not) pod would violate ``pdb``."""
        if healthy:
            allowed = status["disruptionsAllowed"] > 0
        else:
            allowed = status["currentHealthy"] >= status["desiredHealthy"]
        if allowed:
            return
        name = pdb["metadata"]["name"]
        raise ApiError(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
            {
                "causes": [
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {name} needs "
                        f"{status['desiredHealthy']} healthy pods and has "
                        f"{status['currentHealthy']} currently",
                    }
                ]
            },
        )
