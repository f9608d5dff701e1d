"""The lab's artifact mirror: a small static HTTP file server (GET/HEAD, no listings).

Serves the cache built by galley.lab.artifacts so lab droplets download
``http://<mirror>/<upstream host>/<upstream path>``. Lab code only.

    python -m galley.lab.mirror --listen 198.18.0.1:8080 --root /var/cache/galley/mirror
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit


class MirrorHandler(BaseHTTPRequestHandler):
    """Serve regular files below the server's root; everything else is a 404."""

    server: MirrorServer
    server_version = "galley-mirror"

    def _resolve(self) -> Path | None:
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        if not relative or "\0" in relative:
            return None
        root = self.server.root
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            return None
        return candidate

    def _send_headers(self) -> Path | None:
        path = self._resolve()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        stat = path.stat()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
        self.end_headers()
        return path

    def do_HEAD(self) -> None:
        """Answer with the headers a GET would send."""
        self._send_headers()

    def do_GET(self) -> None:
        """Send a file below the root."""
        path = self._send_headers()
        if path is not None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, self.wfile)


class MirrorServer(ThreadingHTTPServer):
    """Threaded HTTP server serving files below ``root``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path) -> None:
        self.root = Path(root).resolve()
        super().__init__(address, MirrorHandler)


def parse_listen(value: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (IPv4 address or name) into an address tuple."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    """Serve ``--root`` on ``--listen`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m galley.lab.mirror", description=__doc__)
    parser.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT")
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with MirrorServer(args.listen, args.root) as server:
        host, port = server.server_address[:2]
        print(f"serving {server.root} on http://{host}:{port}/", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
