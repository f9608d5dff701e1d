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
    admit,
    pin,
    pin_file,
    read_admitted,
    read_keys,
    store_dir,
    write_keys,
)
from galley.inventory.load import unchecked
from galley.lab.inventory import lab_groups, pin_lab
from galley.lab.lifecycle import admit_droplet
from galley.lab.state import Droplet, LabState

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


# --- admission: new droplets in the etcd and control_plane groups ---------------------------


def test_a_new_control_plane_droplet_stops_the_run_until_admitted(server, tmp_path):
    admit(tmp_path, [])  # a store that already keeps the admitted list
    hosts = entries(server, 4007, "cp-3")
    with pytest.raises(HostKeyError) as raised:
        pin(hosts, tmp_path, INVENTORY, guarded_names={"cp-3"})
    message = str(raised.value)
    assert "cp-3 (droplet id 4007, address 127.0.0.1)" in message
    assert f"galley hostkeys accept {INVENTORY} cp-3" in message
    assert server.connections == 0
    # Loaded without contacting hosts (galley's own commands): not trusted on first use either.
    with unchecked():
        pin(hosts, tmp_path, INVENTORY, guarded_names={"cp-3"})
    assert hosts[0][1]["ssh_strict_host_key_checking"] == "yes"
    target = Target("cp-3", 4007, "127.0.0.1", server.port)
    accept(target, pin_file(tmp_path, 4007), fingerprint=server.offered().fingerprint)
    assert read_admitted(tmp_path) == {4007}
    pin(hosts, tmp_path, INVENTORY, guarded_names={"cp-3"})
    assert hosts[0][1]["ssh_strict_host_key_checking"] == "accept-new"


def test_workers_keep_trust_on_first_use_but_not_into_the_control_plane(server, tmp_path):
    admit(tmp_path, [])
    hosts = entries(server, 4008, "worker-9")
    pin(hosts, tmp_path, INVENTORY, guarded_names={"cp-1"})
    assert hosts[0][1]["ssh_strict_host_key_checking"] == "accept-new"
    # pyinfra pinned its key on first use; the same droplet tagged into the control plane:
    write_keys(pin_file(tmp_path, 4008), "127.0.0.1", server.port, [server.offered()])
    with pytest.raises(HostKeyError, match=r"worker-9 \(droplet id 4008"):
        pin(hosts, tmp_path, INVENTORY, guarded_names={"worker-9"})


def test_pins_made_before_admission_existed_stay_trusted(server, tmp_path):
    write_keys(pin_file(tmp_path, 4001), "127.0.0.1", server.port, [server.offered()])
    pin(entries(server), tmp_path, INVENTORY, guarded_names={"etcd-1", "etcd-2"})
    assert read_admitted(tmp_path) == {4001}


def test_the_lab_pins_per_droplet_id_and_admits_only_what_lab_up_booted(server, tmp_path):
    store = tmp_path / "host-keys"
    droplets = [
        Droplet("lab-cp-1", "127.0.0.1", ["control_plane"], droplet_id=1001),
        Droplet("lab-worker-1", "127.0.0.1", ["workers"], droplet_id=1002),
        Droplet("lab-cp-2", "127.0.0.1", ["control_plane"], droplet_id=1003),  # `lab add`
    ]
    state = LabState(host_keys=str(store), droplets=droplets)
    line = f"127.0.0.1 {server.offered().type} {server.offered().base64}"
    admit_droplet(state, droplets[0], [line])  # what `lab up` does for its droplets

    def groups() -> dict:
        return lab_groups(state, {"ssh_port": server.port})

    with pytest.raises(HostKeyError, match=r"lab-cp-2 \(droplet id 1003") as raised:
        pin_lab(groups(), state, "inventories/lab.py")
    assert "galley hostkeys accept inventories/lab.py lab-cp-2" in str(raised.value)
    assert "lab-worker-1" not in str(raised.value)  # a worker: trust on first use
    # `galley lab replace lab-cp-2` (new id, same address): no key mismatch, still not admitted.
    droplets[2] = Droplet("lab-cp-2", "127.0.0.1", ["control_plane"], droplet_id=1004)
    with unchecked():
        found = pin_lab(groups(), state, "inventories/lab.py")
    data = dict(found["control_plane"])["lab-cp-2"]
    assert data["ssh_known_hosts_file"] == str(pin_file(store, 1004))
    assert data["ssh_strict_host_key_checking"] == "yes"
    admit(store, [1004])
    pin_lab(groups(), state, "inventories/lab.py")  # admitted: passes
    # A changed key on the same id (lab-cp-1, admitted by `lab up`) is an error.
    server.regenerate()
    with pytest.raises(HostKeyError, match=r"changed since it was pinned") as raised:
        pin_lab(groups(), state, "inventories/lab.py")
    assert "lab-cp-1 (droplet id 1001, address 127.0.0.1):\n    pinned" in str(raised.value)


def test_a_lab_recorded_before_droplet_ids_keeps_its_known_hosts_file():
    state = LabState(known_hosts="/lab/known_hosts", droplets=[Droplet("a", "10.0.0.1", ["etcd"])])
    (_, data), *_ = pin_lab(lab_groups(state), state, "inventories/lab.py")["etcd"]
    assert data["ssh_known_hosts_file"] == "/lab/known_hosts"
