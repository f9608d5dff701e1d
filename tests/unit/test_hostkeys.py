"""galley.inventory.hostkeys against an in-process SSH server on 127.0.0.1 (a stand-in:
paramiko in server mode, key exchange only) whose host key the tests swap, as a recreated
droplet would."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from galley.inventory.hostkeys import (
    HostKey,
    HostKeyError,
    Target,
    accept,
    pin,
    pin_file,
    read_keys,
    store_dir,
    write_keys,
)
from galley.inventory.load import unchecked

INVENTORY = "inventories/nyc3.py"


class StandInSshServer(threading.Thread):
    """Answers SSH key exchanges on 127.0.0.1 with ``self.key``; counts the connections."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.key = _new_key()
        self.connections = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        # Polls instead of blocking in accept(): closing a socket another thread blocks on lets
        # that thread accept on whatever socket reuses the descriptor next (another test's).
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.key)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):  # clients hang up after kex
                transport.close()

    def offered(self) -> HostKey:
        return HostKey(self.key.get_name(), self.key.get_base64())

    def regenerate(self) -> None:
        self.key = _new_key()


def _new_key() -> paramiko.Ed25519Key:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem.decode()))


@pytest.fixture
def server():
    stand_in = StandInSshServer()
    stand_in.start()
    yield stand_in
    stand_in.stopping.set()
    stand_in.join()
    stand_in.listener.close()


def entries(server, droplet_id: int = 4001, name: str = "etcd-1") -> list[tuple[str, dict]]:
    return [
        (name, {"droplet_id": droplet_id, "ssh_hostname": "127.0.0.1", "ssh_port": server.port})
    ]


def test_store_defaults_to_a_directory_per_cluster_and_follows_the_environment(tmp_path):
    assert store_dir("k8s-nyc3", {}) == Path("~/.config/galley/known_hosts/k8s-nyc3").expanduser()
    assert store_dir("k8s-nyc3", {"GALLEY_KNOWN_HOSTS": str(tmp_path)}) == tmp_path


def test_fingerprint_matches_ssh_keygen(server, tmp_path):
    path = tmp_path / "known_hosts"
    write_keys(path, "10.0.0.1", 22, [server.offered()])
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert server.offered().fingerprint in listed


def test_a_new_droplet_is_trusted_on_first_use_without_being_contacted(server, tmp_path):
    hosts = entries(server)
    pin(hosts, tmp_path, INVENTORY)
    data = hosts[0][1]
    assert data["ssh_known_hosts_file"] == str(pin_file(tmp_path, 4001))
    assert data["ssh_strict_host_key_checking"] == "accept-new"
    # pyinfra appends the key it is offered to the (existing, empty) file on first connect.
    assert Path(data["ssh_known_hosts_file"]).read_text() == ""
    assert server.connections == 0


def test_an_unchanged_pinned_key_passes(server, tmp_path):
    write_keys(pin_file(tmp_path, 4001), "127.0.0.1", server.port, [server.offered()])
    pin(entries(server), tmp_path, INVENTORY)
    assert server.connections == 1


def test_a_changed_key_is_refused_with_what_changed_and_how_to_accept(server, tmp_path):
    old = server.offered()
    write_keys(pin_file(tmp_path, 4001), "127.0.0.1", server.port, [old])
    server.regenerate()
    new = server.offered()
    with pytest.raises(HostKeyError) as raised:
        pin(entries(server), tmp_path, INVENTORY)
    message = str(raised.value)
    assert "etcd-1 (droplet id 4001, address 127.0.0.1)" in message
    assert f"pinned: ssh-ed25519 {old.fingerprint}" in message
    assert f"now:    ssh-ed25519 {new.fingerprint}" in message
    assert f"galley hostkeys accept {INVENTORY} etcd-1 --fingerprint {new.fingerprint}" in message
    # Nothing was trusted: the pin is unchanged.
    assert read_keys(pin_file(tmp_path, 4001)) == [old]


def test_a_new_droplet_on_a_reused_address_is_not_blocked_by_the_old_key(server, tmp_path):
    write_keys(pin_file(tmp_path, 4001), "127.0.0.1", server.port, [server.offered()])
    server.regenerate()  # droplet 4001 was destroyed; 4002 now has its address
    hosts = entries(server, droplet_id=4002)
    pin(hosts, tmp_path, INVENTORY)
    assert hosts[0][1]["ssh_known_hosts_file"] == str(pin_file(tmp_path, 4002))
    assert read_keys(pin_file(tmp_path, 4002)) == []


def test_unchecked_loading_does_not_contact_hosts(server, tmp_path):
    write_keys(pin_file(tmp_path, 4001), "127.0.0.1", server.port, [server.offered()])
    server.regenerate()
    with unchecked():
        pin(entries(server), tmp_path, INVENTORY)
    assert server.connections == 0


def test_pins_follow_a_droplet_to_its_current_address(server, tmp_path):
    path = pin_file(tmp_path, 4001)
    write_keys(path, "10.9.9.9", 22, [server.offered()])
    pin(entries(server), tmp_path, INVENTORY)
    assert path.read_text().startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")


def test_accept_pins_the_new_key_only_if_it_is_the_one_the_operator_saw(server, tmp_path):
    path = pin_file(tmp_path, 4001)
    old = server.offered()
    write_keys(path, "127.0.0.1", server.port, [old])
    server.regenerate()
    target = Target("etcd-1", 4001, "127.0.0.1", server.port)
    with pytest.raises(HostKeyError, match="nothing was accepted"):
        accept(target, path, fingerprint=old.fingerprint)
    assert read_keys(path) == [old]
    assert accept(target, path, fingerprint=server.offered().fingerprint) == (
        [old],
        server.offered(),
    )
    pin(entries(server), tmp_path, INVENTORY)  # passes now
