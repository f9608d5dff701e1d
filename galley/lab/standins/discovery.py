"""Discovery of the API slice: what clients read first (lab/test only; stdlib only).

The kube-apiserver stand-in serves, derived from the resource table of ``api``:

- ``/version``: the version.Info of the pinned release (``gitVersion`` is the build's
  ``VERSION``). Commit, tree state and build date are those of an upstream build without
  version stamping (this is not upstream's build); ``goVersion``, ``compiler`` and ``platform``
  name the interpreter that runs the stand-in.
- the legacy documents: ``/api`` (APIVersions), ``/api/v1`` and ``/apis/<group>/<version>``
  (APIResourceList, with subresources such as ``nodes/status`` and ``pods/eviction``),
  ``/apis`` (APIGroupList) and ``/apis/<group>`` (APIGroup);
- on ``/api`` and ``/apis``, aggregated discovery (apidiscovery.k8s.io/v2
  APIGroupDiscoveryList), which kubectl asks for first
  (``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...,
  application/json``). A client asking for plain JSON gets the legacy document. Aggregated
  answers carry their content type with the g/v/as parameters, an ``ETag`` (``Vary: Accept``)
  and 304 Not Modified for a matching ``If-None-Match``, as upstream.

Only the verbs the stand-in serves are listed (no watch, no deletecollection), and only its
subresources.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys

from .api import JSON, RESOURCES, VERBS, Resource, negotiate
from .serve import Answer, Request, Route

AGGREGATED = ("apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")
AGGREGATED_JSON = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def version_info(version: str) -> dict:
    """The kube-apiserver's ``/version`` document for release ``version`` (``v1.33.5``)."""
    major, minor = version.removeprefix("v").split(".")[:2]
    machine = platform.machine()
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(int(minor) - 1),
        "gitVersion": version,
        "gitCommit": "$Format:%H$",
        "gitTreeState": "",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{_ARCHITECTURES.get(machine, machine)}",
    }


def _group_versions() -> dict[str, dict[str, list[Resource]]]:
    """The served resources by group ("" for core) and version, in the table's order."""
    groups: dict[str, dict[str, list[Resource]]] = {}
    for resource in RESOURCES.values():
        groups.setdefault(resource.group, {}).setdefault(resource.version, []).append(resource)
    return groups


def _group_version(group: str, version: str) -> dict:
    return {"groupVersion": f"{group}/{version}" if group else version, "version": version}


def _api_resources(resource: Resource) -> list[dict]:
    """A resource and its subresources as legacy APIResource entries."""
    entry: dict = {
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": list(VERBS),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    entries = [entry]
    for sub in resource.subresources:
        other = {}  # the group and version of a subresource answering another group's kind
        if sub.api_version:
            group, _, version = sub.api_version.rpartition("/")
            other = {"group": group, "version": version}
        entries.append(
            {
                "name": f"{resource.plural}/{sub.name}",
                "singularName": "",
                "namespaced": resource.namespaced,
                **other,
                "kind": sub.kind or resource.kind,
                "verbs": list(sub.verbs),
            }
        )
    return entries


def _resource_list(group: str, version: str, resources: list[Resource]) -> dict:
    """The APIResourceList of a group version (the core group's has no apiVersion, as
    upstream's)."""
    header = {"kind": "APIResourceList", **({"apiVersion": "v1"} if group else {})}
    return {
        **header,
        "groupVersion": _group_version(group, version)["groupVersion"],
        "resources": [entry for resource in resources for entry in _api_resources(resource)],
    }


def _kind(api_version: str, kind: str) -> dict:
    """A GroupVersionKind."""
    group, _, version = api_version.rpartition("/")
    return {"group": group, "version": version, "kind": kind}


def _resource_discovery(resource: Resource) -> dict:
    """A resource as an aggregated APIResourceDiscovery."""
    found: dict = {
        "resource": resource.plural,
        "responseKind": _kind(resource.api_version, resource.kind),
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular,
        "verbs": list(VERBS),
    }
    if resource.short_names:
        found["shortNames"] = list(resource.short_names)
    if resource.categories:
        found["categories"] = list(resource.categories)
    if resource.subresources:
        found["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": _kind(
                    sub.api_version or resource.api_version, sub.kind or resource.kind
                ),
                "verbs": list(sub.verbs),
            }
            for sub in resource.subresources
        ]
    return found


def _aggregated(groups: dict[str, dict[str, list[Resource]]]) -> dict:
    """An APIGroupDiscoveryList of ``groups``."""
    items = []
    for group, versions in groups.items():
        metadata: dict = {"name": group} if group else {}
        items.append(
            {
                "metadata": {**metadata, "creationTimestamp": None},
                "versions": [
                    {
                        "version": version,
                        "resources": [_resource_discovery(r) for r in resources],
                        "freshness": "Current",
                    }
                    for version, resources in versions.items()
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _version(version: str) -> Route:
    """``/version``: indented JSON whatever the client accepts, as upstream's."""
    body = json.dumps(version_info(version), indent=2).encode()
    return lambda request: (200, JSON, body)


def _document(legacy: dict, aggregated: dict | None = None) -> Route:
    """A route answering ``legacy``, or ``aggregated`` to clients asking for it."""
    offers: dict[tuple[str, str, str] | None, tuple[str, bytes, dict[str, str]]] = {
        None: (JSON, json.dumps(legacy).encode(), {})
    }
    if aggregated is not None:
        body = json.dumps(aggregated).encode()
        etag = f'"{hashlib.sha512(body).hexdigest().upper()}"'
        cache = {"ETag": etag, "Vary": "Accept", "Cache-Control": "public"}
        offers[AGGREGATED] = (AGGREGATED_JSON, body, cache)

    def route(request: Request) -> Answer:
        content_type, body, headers = negotiate(request.headers.get("accept", ""), offers)
        if headers and request.headers.get("if-none-match") == headers["ETag"]:
            return 304, content_type, b"", headers
        return 200, content_type, body, headers

    return route


def paths(version: str, address: str) -> dict[str, Route]:
    """The discovery routes of an apiserver of release ``version`` reachable at ``address``
    (host:port, what ``/api`` names as the server's address)."""
    groups = _group_versions()
    core = {"": groups.pop("", {})}
    routes = {
        "/version": _version(version),
        "/api": _document(
            {
                "kind": "APIVersions",
                "versions": list(core[""]),
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": address}
                ],
            },
            _aggregated(core),
        ),
    }
    listed = []
    for group, by_version in groups.items():
        served = [_group_version(group, version) for version in by_version]
        found = {"name": group, "versions": served, "preferredVersion": served[0]}
        listed.append(found)
        routes[f"/apis/{group}"] = _document({"kind": "APIGroup", "apiVersion": "v1", **found})
    routes["/apis"] = _document(
        {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}, _aggregated(groups)
    )
    for group, by_version in {**core, **groups}.items():
        for version, resources in by_version.items():
            routes[resources[0].path] = _document(_resource_list(group, version, resources))
    return routes
