"""STAND-IN for DigitalOcean's `/v2/droplets` (GET) and `/v2/firewalls` (GET, POST, PUT,
DELETE), served on 127.0.0.1 for tests only.

This is not the DigitalOcean API and production code never imports it. It mimics what
galley relies on: Bearer authentication (401 with the API's error body), `tag_name`
filtering, `page`/`per_page` (1..200, default 20) pagination with absolute
`links.pages` first/prev/next/last URLs and `meta.total`, `ratelimit-*` headers, and
injectable failures (429 with `retry-after`, 500) for the next N requests.

Cloud Firewalls as DigitalOcean's API reference describes them (docs.digitalocean.com,
"Firewalls": create, update, list, delete): a firewall is ``name`` (an alphanumeric, then
alphanumerics, "." and "-"), ``inbound_rules`` (protocol tcp/udp/icmp, ``ports`` a port, a
range "8000-9000" or "0"/"all" for every port, ``sources`` of addresses, droplet_ids,
load_balancer_uids, kubernetes_ids, tags), ``outbound_rules`` (the same with
``destinations``), ``droplet_ids`` and ``tags``. A create needs at least one rule and answers
202 with the firewall (``id``, ``status``, ``created_at``, ``pending_changes``); an update
(PUT) replaces the whole firewall and answers 200; a delete answers 204. Answers give every
all-ports rule (and every ICMP rule) ``ports`` "0", as the reference says. A refused body is
a 422 ``unprocessable_entity`` with a message of this stand-in's own wording.

The 401 body is the one the real API is seen to send (`"Unauthorized"`, no full stop; the
OpenAPI example spells it `"unauthorized"`). Refusing per_page outside 1..200 with a 400 is
this stand-in's choice, not verified against the real API.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

RATE_LIMIT = 5000
ERRORS = {
    401: ("Unauthorized", "Unable to authenticate you"),
    404: ("not_found", "The resource you were accessing could not be found."),
    422: ("unprocessable_entity", "The request could not be processed."),
    429: ("too_many_requests", "API rate limit exceeded."),
    500: ("server_error", "Server was unable to give you a response."),
}


def droplet(
    droplet_id: int,
    name: str,
    tags: Iterable[str] = (),
    status: str = "active",
    region: str = "nyc3",
    size: str = "s-2vcpu-4gb",
    private_ip: str | None = "10.108.0.2",
    public_ip: str | None = "203.0.113.2",
) -> dict[str, Any]:
    """A droplet object shaped like the API's (only the fields galley reads, plus a few)."""
    v4 = []
    if private_ip:
        v4.append({"ip_address": private_ip, "netmask": "255.255.240.0", "type": "private"})
    if public_ip:
        gateway = public_ip.rsplit(".", 1)[0] + ".1"
        v4.append(
            {
                "ip_address": public_ip,
                "netmask": "255.255.255.0",
                "gateway": gateway,
                "type": "public",
            }
        )
    return {
        "id": droplet_id,
        "name": name,
        "status": status,
        "tags": list(tags),
        "region": {"slug": region, "name": region.upper()},
        "size_slug": size,
        "image": {"slug": "debian-12-x64"},
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
        "networks": {"v4": v4, "v6": []},
    }


@dataclass
class DigitalOceanStandIn:
    """A running stand-in: its base URL, the requests it saw, and failure injection."""

    droplets: list[dict[str, Any]]
    token: str
    per_page_default: int
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    _failures: list[tuple[int, int | None]] = field(default_factory=list)
    _remaining: int = RATE_LIMIT
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `count` requests with `status` (429 or 500), before any auth check."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def handle(
        self,
        path: str,
        query: dict[str, list[str]],
        authorization: str,
        method: str = "GET",
        body: Any = None,
    ) -> tuple:
        """(status, headers, body) for one request."""
        with self._lock:
            self.requests.append({"path": path, "query": query, "method": method, "body": body})
            failure = self._failures.pop(0) if self._failures else None
            self._remaining = max(0, self._remaining - 1)
            headers = {
                "ratelimit-limit": str(RATE_LIMIT),
                "ratelimit-remaining": str(self._remaining),
                "ratelimit-reset": str(int(time.time()) + 3600),
                "x-request-id": str(uuid.uuid4()),
            }
        if failure:
            status, retry_after = failure
            if retry_after is not None:
                headers["retry-after"] = str(retry_after)
            return _error(status, headers)
        if authorization != f"Bearer {self.token}":
            return _error(401, headers)
        if path.startswith("/v2/firewalls"):
            with self._lock:
                return self._firewalls(method, path, query, body, headers)
        if path != "/v2/droplets" or method != "GET":
            return _error(404, headers)
        return self._page(path, "droplets", self._matching(query), query, headers)

    def _matching(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        tag = query.get("tag_name", [None])[0]
        return [d for d in self.droplets if tag is None or tag in d["tags"]]

    def _page(
        self,
        path: str,
        key: str,
        matching: list[dict[str, Any]],
        query: dict[str, list[str]],
        headers: dict[str, str],
    ) -> tuple:
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", [str(self.per_page_default)])[0])
        except ValueError:
            page = per_page = 0
        if page < 1 or not 1 <= per_page <= 200:
            body = {"id": "bad_request", "message": "page and per_page must be in range"}
            return 400, headers, body
        pages = max(1, -(-len(matching) // per_page))
        body = {
            key: matching[(page - 1) * per_page : page * per_page],
            "links": {"pages": self._links(path, query, page, pages)},
            "meta": {"total": len(matching)},
        }
        return 200, headers, body

    def _firewalls(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict
    ) -> tuple:
        parts = path.removeprefix("/v2/firewalls").strip("/")
        if method == "GET" and not parts:
            return self._page(path, "firewalls", list(self.firewalls.values()), query, headers)
        if method == "POST" and not parts:
            problem = _firewall_problem(body)
            if problem:
                return _error(422, headers, problem)
            firewall_id = str(uuid.uuid4())
            self.firewalls[firewall_id] = _firewall(firewall_id, body, "waiting")
            return 202, headers, {"firewall": self.firewalls[firewall_id]}
        if parts not in self.firewalls:
            return _error(404, headers)
        if method == "PUT":
            problem = _firewall_problem(body)
            if problem:
                return _error(422, headers, problem)
            created = self.firewalls[parts]["created_at"]
            self.firewalls[parts] = _firewall(parts, body, "waiting", created)
            return 200, headers, {"firewall": self.firewalls[parts]}
        if method == "DELETE":
            del self.firewalls[parts]
            return 204, headers, None
        if method == "GET":
            return 200, headers, {"firewall": self.firewalls[parts]}
        return _error(404, headers)

    def writes(self) -> list[dict[str, Any]]:
        """Every request that could change something (POST, PUT, DELETE), in order."""
        return [r for r in self.requests if r["method"] != "GET"]

    def _links(
        self, path: str, query: dict[str, list[str]], page: int, pages: int
    ) -> dict[str, str]:
        def link(number: int) -> str:
            params = {key: values[0] for key, values in query.items()} | {"page": str(number)}
            return f"{self.url}{path}?{urlencode(params)}"

        links = {}
        if page > 1:
            links |= {"first": link(1), "prev": link(page - 1)}
        if page < pages:
            links |= {"next": link(page + 1), "last": link(pages)}
        return links


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
PORTS = re.compile(r"(\d{1,5})(-(\d{1,5}))?")
PLACES = ("addresses", "droplet_ids", "load_balancer_uids", "kubernetes_ids", "tags")


def _rule_problem(rule: Any, where: str) -> str | None:
    if not isinstance(rule, dict) or rule.get("protocol") not in ("tcp", "udp", "icmp"):
        return "protocol must be one of tcp, udp, icmp"
    ports = rule.get("ports")
    if rule["protocol"] != "icmp":
        found = PORTS.fullmatch(str(ports)) if ports not in ("all", "0") else True
        if not found or (
            found is not True
            and not all(1 <= int(n) <= 65535 for n in found.groups()[::2] if n is not None)
        ):
            return f"ports {ports!r} is not a port, a range or all"
    places = rule.get(where)
    if not isinstance(places, dict) or not any(places.get(key) for key in PLACES):
        return f"a rule needs {where}"
    return None


def _firewall_problem(body: Any) -> str | None:
    """Why a firewall body is refused (422), None when it is accepted."""
    if not isinstance(body, dict) or not NAME.fullmatch(str(body.get("name", ""))):
        return "name must begin with an alphanumeric character"
    inbound, outbound = body.get("inbound_rules") or [], body.get("outbound_rules") or []
    if not inbound and not outbound:
        return "a firewall needs at least one inbound or outbound rule"
    for rules, where in ((inbound, "sources"), (outbound, "destinations")):
        for rule in rules:
            if problem := _rule_problem(rule, where):
                return problem
    ids = body.get("droplet_ids") or []
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return "droplet_ids must be droplet ids"
    return None


def _firewall(
    firewall_id: str, body: dict[str, Any], status: str, created: str | None = None
) -> dict[str, Any]:
    """A firewall as the API answers it: ports "0" for every port and for ICMP."""

    def answered(rule: dict[str, Any]) -> dict[str, Any]:
        all_ports = rule["protocol"] == "icmp" or rule.get("ports") in ("all", "0")
        return rule | {"ports": "0" if all_ports else str(rule["ports"])}

    return {
        "id": firewall_id,
        "name": body["name"],
        "status": status,
        "inbound_rules": [answered(r) for r in body.get("inbound_rules") or []],
        "outbound_rules": [answered(r) for r in body.get("outbound_rules") or []],
        "created_at": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "droplet_ids": list(body.get("droplet_ids") or []),
        "tags": list(body.get("tags") or []),
        "pending_changes": [],
    }


def _error(status: int, headers: dict[str, str], message: str | None = None) -> tuple:
    error_id, default = ERRORS[status]
    body: dict[str, Any] = {"id": error_id, "message": message or default}
    if status >= 500:
        body["request_id"] = headers["x-request-id"]
    return status, headers, body


@contextmanager
def serve(
    droplets: Iterable[dict[str, Any]], token: str, per_page_default: int = 20
) -> Iterator[DigitalOceanStandIn]:
    """Run the stand-in on 127.0.0.1 (a free port) for the duration of the `with` block."""
    standin = DigitalOceanStandIn(list(droplets), token, per_page_default)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            try:
                sent = json.loads(self.rfile.read(length)) if length else None
            except ValueError:
                sent = "not JSON"
            status, headers, body = standin.handle(
                parts.path,
                parse_qs(parts.query),
                self.headers.get("Authorization", ""),
                self.command,
                sent,
            )
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
