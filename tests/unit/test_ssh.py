"""galley.host.ssh: Nagle is turned off on connected SSH sockets, other hosts are left alone."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from galley.host.ssh import disable_nagle


def _host(sock) -> SimpleNamespace:
    transport = SimpleNamespace(sock=sock)
    client = SimpleNamespace(get_transport=lambda: transport)
    return SimpleNamespace(connector=SimpleNamespace(client=client))


def test_sets_tcp_nodelay_on_connected_ssh_sockets_only():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client_sock = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        unix_a, unix_b = socket.socketpair(socket.AF_UNIX)
        try:
            assert client_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            hosts = [
                _host(client_sock),
                _host(unix_a),  # e.g. a proxy command: no TCP options
                SimpleNamespace(connector=SimpleNamespace(client=None)),  # not connected
                SimpleNamespace(connector=SimpleNamespace()),  # @local, @docker, ...
            ]
            assert disable_nagle(hosts) == 1
            assert client_sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert disable_nagle(hosts) == 1  # again: harmless
        finally:
            for sock in (client_sock, peer, unix_a, unix_b):
                sock.close()
