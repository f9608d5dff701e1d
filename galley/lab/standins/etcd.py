"""A tiny etcd v3 client over HTTPS for the stand-ins (lab/test only; stdlib only).

Uses etcd's ``/health`` endpoint and its v3 JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/kv/deleterange``) with a client certificate, as the real components use etcd's gRPC API.
Keys and values are base64 in the gateway's JSON; revisions are decimal strings.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
from dataclasses import dataclass
from functools import cached_property, partial
from urllib.parse import urlsplit

from .keepalive import KeptConnection


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range_end)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(frozen=True)
class KeyValue:
    """One key with its value and the revision that last modified it."""

    key: str
    value: bytes
    mod_revision: int


class EtcdError(Exception):
    """etcd could not be reached or answered with an error."""


@dataclass(frozen=True)
class EtcdClient:
    """Endpoints (``https://host:port``) and the TLS files to reach them."""

    endpoints: tuple[str, ...]
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    timeout: float = 2.0

    def _context(self) -> ssl.SSLContext:
        """The TLS context for a new connection, loaded again when a file changed on disk (a
        renewed client certificate is used without a restart; open connections stay)."""
        files = [path for path in (self.cafile, self.certfile, self.keyfile) if path]
        stamps = tuple(os.stat(path).st_mtime_ns for path in files)
        loaded = self.__dict__.get("_loaded")
        if loaded is None or loaded[0] != stamps:
            context = ssl.create_default_context(cafile=self.cafile)
            if self.certfile:
                context.load_cert_chain(self.certfile, self.keyfile)
            loaded = self.__dict__["_loaded"] = (stamps, context)
        return loaded[1]

    @cached_property
    def _connections(self) -> threading.local:
        # One kept-alive connection per endpoint and thread, as a gRPC client keeps its own.
        return threading.local()

    def _open(self, endpoint: str) -> http.client.HTTPConnection:
        url = urlsplit(endpoint)
        if url.scheme == "https":
            return http.client.HTTPSConnection(
                url.hostname, url.port or 2379, timeout=self.timeout, context=self._context()
            )
        return http.client.HTTPConnection(url.hostname, url.port or 2379, timeout=self.timeout)

    def _kept(self, endpoint: str) -> KeptConnection:
        kept = self._connections.__dict__
        if endpoint not in kept:
            kept[endpoint] = KeptConnection(partial(self._open, endpoint))
        return kept[endpoint]

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict:
        errors = []
        for endpoint in self.endpoints:
            try:
                status, data = self._kept(endpoint).exchange(method, path, body)
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            if status != 200:
                errors.append(f"{endpoint}: HTTP {status}: {data[:200]!r}")
                continue
            try:
                return json.loads(data)
            except json.JSONDecodeError:
                errors.append(f"{endpoint}: not JSON: {data[:200]!r}")
        raise EtcdError("; ".join(errors) or "no etcd endpoints")

    def health(self) -> None:
        """Return if some endpoint reports ``health: true``; raise EtcdError otherwise."""
        answer = self._request("GET", "/health")
        if str(answer.get("health")).lower() != "true":
            raise EtcdError(f"etcd reports unhealthy: {answer.get('reason') or answer}")

    def _kv(self, path: str, request: dict) -> dict:
        return self._request("POST", path, json.dumps(request).encode())

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if it does not exist."""
        found = self.range(key)[0]
        return found[0].value if found else None

    def range(self, key: str, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """``key`` (or every key below the prefix ``key``) and the store's current revision."""
        request = {"key": _b64(key.encode())}
        if prefix:
            request["range_end"] = _b64(_prefix_end(key.encode()))
        answer = self._kv("/v3/kv/range", request)
        found = [
            KeyValue(
                base64.b64decode(kv["key"]).decode(),
                base64.b64decode(kv.get("value", "")),
                int(kv.get("mod_revision", 0)),
            )
            for kv in answer.get("kvs") or []
        ]
        return found, int(answer.get("header", {}).get("revision", 0))

    def put_if(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Write ``key`` if it was last modified at ``mod_revision`` (0: if it does not exist).

        Returns the new revision, or None when the key changed in between.
        """
        answer = self._kv(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(key.encode()),
                        "target": "MOD",
                        "result": "EQUAL",
                        "mod_revision": str(mod_revision),
                    }
                ],
                "success": [{"request_put": {"key": _b64(key.encode()), "value": _b64(value)}}],
            },
        )
        if str(answer.get("succeeded")).lower() != "true":
            return None
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        answer = self._kv("/v3/kv/deleterange", {"key": _b64(key.encode())})
        return int(answer.get("deleted", 0)) > 0
