"""Stand-in Vault's HTTP server, public API (``serve``, ``StandinVault``) and CLI."""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from galley.lab.vault_standin.core import Core


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], core: Core, verbose: bool) -> None:
        super().__init__(address, _RequestHandler)
        self.core = core
        self.verbose = verbose


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        reply = self.server.core.handle(self.command, url.path, url.query, self.headers, body)
        self.send_response(reply.status)
        if reply.status != 204:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.status != 204:
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class StandinVault:
    """A running stand-in: ``url``, ``shutdown()``, and ``seal()``/``unseal()`` for tests."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def seal(self) -> None:
        """Seal the stand-in, as ``vault operator seal`` would."""
        with self._server.core.lock:
            self._server.core.sealed = True

    def unseal(self) -> None:
        """Unseal the stand-in."""
        with self._server.core.lock:
            self._server.core.sealed = False

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(host: str, port: int, root_token: str, *, verbose: bool = False) -> StandinVault:
    """Start the stand-in on host:port (0 picks a free port) in a daemon thread."""
    server = _Server((host, port), Core(root_token), verbose)
    thread = threading.Thread(target=server.serve_forever, name="vault-standin", daemon=True)
    thread.start()
    return StandinVault(server, thread)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="Stand-in for HashiCorp Vault, lab/test only.")
    parser.add_argument("--listen", default="127.0.0.1:8200", help="host:port to listen on")
    parser.add_argument("--root-token", required=True, help="the root token to accept")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    vault = serve(host or "127.0.0.1", int(port), args.root_token, verbose=True)
    print(f"vault stand-in listening on {vault.url}", flush=True)
    stop.wait()
    vault.shutdown()
    return 0
