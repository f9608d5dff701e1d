"""STAND-IN for DigitalOcean's `GET /v2/droplets`, served on 127.0.0.1 for tests only.

This is not the DigitalOcean API and production code never imports it. It mimics what
galley relies on: Bearer authentication (401 with the API's error body), `tag_name`
filtering, `page`/`per_page` (1..200, default 20) pagination with absolute
`links.pages` first/prev/next/last URLs and `meta.total`, `ratelimit-*` headers, and
injectable failures (429 with `retry-after`, 500) for the next N requests.

The 401 body is the one the real API is seen to send (`"Unauthorized"`, no full stop; the
OpenAPI example spells it `"unauthorized"`). Refusing per_page outside 1..200 with a 400 is
this stand-in's choice, not verified against the real API.
"""

from __future__ import annotations

import json
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
class DropletsStandIn:
    """A running stand-in: its base URL, the requests it saw, and failure injection."""

    droplets: list[dict[str, Any]]
    token: str
    per_page_default: int
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: list[tuple[int, int | None]] = field(default_factory=list)
    _remaining: int = RATE_LIMIT
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, count: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `count` requests with `status` (429 or 500), before any auth check."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def handle(self, path: str, query: dict[str, list[str]], authorization: str) -> tuple:
        """(status, headers, body) for one GET request."""
        with self._lock:
            self.requests.append({"path": path, "query": query})
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
        if path != "/v2/droplets":
            return _error(404, headers)
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get("per_page", [str(self.per_page_default)])[0])
        except ValueError:
            page = per_page = 0
        if page < 1 or not 1 <= per_page <= 200:
            body = {"id": "bad_request", "message": "page and per_page must be in range"}
            return 400, headers, body
        tag = query.get("tag_name", [None])[0]
        matching = [d for d in self.droplets if tag is None or tag in d["tags"]]
        pages = max(1, -(-len(matching) // per_page))
        body = {
            "droplets": matching[(page - 1) * per_page : page * per_page],
            "links": {"pages": self._links(query, page, pages)},
            "meta": {"total": len(matching)},
        }
        return 200, headers, body

    def _links(self, query: dict[str, list[str]], page: int, pages: int) -> dict[str, str]:
        def link(number: int) -> str:
            params = {key: values[0] for key, values in query.items()} | {"page": str(number)}
            return f"{self.url}/v2/droplets?{urlencode(params)}"

        links = {}
        if page > 1:
            links |= {"first": link(1), "prev": link(page - 1)}
        if page < pages:
            links |= {"next": link(page + 1), "last": link(pages)}
        return links


def _error(status: int, headers: dict[str, str]) -> tuple:
    error_id, message = ERRORS[status]
    body: dict[str, Any] = {"id": error_id, "message": message}
    if status >= 500:
        body["request_id"] = headers["x-request-id"]
    return status, headers, body


@contextmanager
def serve(
    droplets: Iterable[dict[str, Any]], token: str, per_page_default: int = 20
) -> Iterator[DropletsStandIn]:
    """Run the stand-in on 127.0.0.1 (a free port) for the duration of the `with` block."""
    standin = DropletsStandIn(list(droplets), token, per_page_default)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, headers, body = standin.handle(
                parts.path, parse_qs(parts.query), self.headers.get("Authorization", "")
            )
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

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
