"""One kept-alive HTTP connection for the stand-ins' clients (lab/test only; stdlib only).

The real clients (kubelet, kube-apiserver's etcd client) keep their connections open; a
connection the server closed meanwhile (a restart, an idle timeout) is opened again once.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping


class KeptConnection:
    """A connection made by ``opener`` when first needed and kept for the next request."""

    def __init__(self, opener: Callable[[], http.client.HTTPConnection]) -> None:
        self._opener = opener
        self._connection: http.client.HTTPConnection | None = None

    def exchange(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; a reused connection that fails is opened again and
        the request sent once more (a fresh one that fails raises)."""
        while True:
            if self._connection is None:
                self._connection = self._opener()
            connection = self._connection
            reused = connection.sock is not None
            try:
                connection.request(method, path, body=body, headers=dict(headers or {}))
                response = connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if not reused:
                    raise

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
