"""HTTP(S) endpoints for the stand-ins (lab/test only; stdlib only).

Each server runs in a daemon thread. TLS handshakes happen in the connection's own thread, so
a client that fails the handshake (say, a certificate from another CA) cannot stall others.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """What a route sees of a request: the client certificate's CN and O values if one was sent,
    and the request headers (names in lower case)."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    body: bytes = b""
    common_name: str | None = None
    organizations: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


# route(request) -> (status, content type, body), optionally with more response headers
# (a 304 Not Modified answer has an empty body)
Answer = tuple[int, str, bytes] | tuple[int, str, bytes, dict[str, str]]
Route = Callable[[Request], Answer]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        """Answer from the server's route function."""
        common_name, organizations = None, []
        if isinstance(self.connection, ssl.SSLSocket):
            peer = self.connection.getpeercert()
            for rdn in (peer or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        common_name = value
                    elif key == "organizationName":
                        organizations.append(value)
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            path=url.path,
            query={name: values[-1] for name, values in parse_qs(url.query).items()},
            content_type=(self.headers.get("Content-Type") or "").split(";")[0].strip(),
            body=self.rfile.read(length) if length else b"",
            common_name=common_name,
            organizations=tuple(organizations),
            headers={name.lower(): value for name, value in self.headers.items()},
        )
        status, content_type, body, *more = self.server.route(request)
        self.send_response(status)
        for name, value in (more[0] if more else {}).items():
            self.send_header(name, value)
        if status != 304:  # Not Modified has no body, nor its headers
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the stand-ins log only what matters."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], route: Route, tls: ServingTls | None) -> None:
        self.route, self.tls = route, tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address) -> None:  # type: ignore[override]
        """Do the TLS handshake here, in the connection's thread."""
        if self.tls is not None:
            try:
                request = self.tls.context().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                print(f"TLS handshake error from {client_address[0]}: {exc}", file=sys.stderr)
                return
        super().finish_request(request, client_address)


class ServingTls:
    """A server's TLS files, loaded again when one of them changes on disk (as upstream's
    dynamic serving certificates are): a renewed certificate is served on the next
    connection, with no restart."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.files = tuple(path for path in (cert, key, client_ca) if path)
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.lock = threading.Lock()
        self.loaded: tuple[float, ...] = ()
        self._context = self._load()

    def _stamps(self) -> tuple[float, ...]:
        return tuple(os.stat(path).st_mtime for path in self.files)

    def _load(self) -> ssl.SSLContext:
        self.loaded = self._stamps()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def context(self) -> ssl.SSLContext:
        """The context for a new connection (the files as they are now)."""
        with self.lock:
            try:
                if self._stamps() != self.loaded:
                    self._context = self._load()
            except (OSError, ssl.SSLError) as exc:  # half-written: keep serving the old pair
                print(f"keeping the loaded TLS files: {exc}", file=sys.stderr, flush=True)
            return self._context


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ServingTls:
    """A server's TLS; with ``client_ca``, client certificates must chain to it if sent."""
    return ServingTls(cert, key, client_ca)


def start(host: str, port: int, route: Route, tls: ServingTls | None = None) -> None:
    """Serve ``route`` on host:port (HTTPS with ``tls``) in a daemon thread."""
    server = _Server((host, port), route, tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    print(f"serving {scheme}://{host}:{port}/", file=sys.stderr, flush=True)
