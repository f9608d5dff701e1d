"""A tiny etcd v3 client over HTTPS for the stand-ins (lab/test only; stdlib only).

Uses etcd's ``/health`` endpoint and its v3 JSON gateway (``POST /v3/kv/range``) with a client
certificate, as the real components use etcd's gRPC API.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


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
        context = ssl.create_default_context(cafile=self.cafile)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict:
        errors = []
        for endpoint in self.endpoints:
            url = urlsplit(endpoint)
            try:
                if url.scheme == "https":
                    connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                        url.hostname,
                        url.port or 2379,
                        timeout=self.timeout,
                        context=self._context(),
                    )
                else:
                    connection = http.client.HTTPConnection(
                        url.hostname, url.port or 2379, timeout=self.timeout
                    )
                connection.request(method, path, body=body)
                response = connection.getresponse()
                data = response.read()
                connection.close()
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            if response.status != 200:
                errors.append(f"{endpoint}: HTTP {response.status}: {data[:200]!r}")
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

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if it does not exist."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        answer = self._request("POST", "/v3/kv/range", body)
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None
