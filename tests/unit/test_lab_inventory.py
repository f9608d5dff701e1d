"""The lab inventory: groups and connection data built from the lab's state."""

import json

from galley.lab.inventory import lab_groups
from galley.lab.state import Droplet, LabState


def _state() -> LabState:
    return LabState(
        cluster="lab",
        ssh_key="/lab/id_ed25519",
        known_hosts="/lab/known_hosts",
        vault_addr="https://127.0.0.1:8200",
        vault_ca_cert="/lab/openbao/tls/ca.pem",
        vault_token_file="/lab/openbao/root-token",
        droplets=[
            Droplet("lab-etcd-1", "198.18.0.10", ["etcd"]),
            Droplet("lab-cp-1", "198.18.0.11", ["control_plane", "etcd"]),
            Droplet("lab-worker-1", "198.18.0.12", ["workers"]),
        ],
    )


def test_every_role_becomes_a_group_and_a_host_may_be_in_several():
    groups = lab_groups(_state())
    assert [name for name, _ in groups["etcd"]] == ["lab-etcd-1", "lab-cp-1"]
    assert [name for name, _ in groups["control_plane"]] == ["lab-cp-1"]
    assert [name for name, _ in groups["workers"]] == ["lab-worker-1"]


def test_hosts_carry_ssh_settings_with_strict_pinned_host_keys():
    _, data = lab_groups(_state())["workers"][0]
    assert data["ssh_hostname"] == data["private_ip"] == "198.18.0.12"
    assert data["ssh_user"] == "root"
    assert data["ssh_key"] == "/lab/id_ed25519"
    assert data["ssh_known_hosts_file"] == "/lab/known_hosts"
    assert data["ssh_strict_host_key_checking"] == "yes"


def test_lab_vault_and_overrides_reach_every_host():
    groups = lab_groups(_state(), {"github_base_url": "http://198.18.0.1:8080/github.com"})
    for hosts in groups.values():
        for _, data in hosts:
            assert data["cluster_name"] == "lab"
            assert data["vault_addr"] == "https://127.0.0.1:8200"
            assert data["vault_ca_cert"] == "/lab/openbao/tls/ca.pem"
            assert data["vault_token_file"] == "/lab/openbao/root-token"
            assert "vault_token" not in data
            assert data["github_base_url"] == "http://198.18.0.1:8080/github.com"


def test_state_round_trips_through_its_file(tmp_path):
    state = _state()
    state.services = {"vault": 123}
    state.save(tmp_path)
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600
    assert LabState.load(tmp_path) == state
    assert LabState.load(tmp_path / "nothing") is None


def test_a_state_recorded_by_an_older_galley_still_loads(tmp_path):
    state = _state()
    state.save(tmp_path)
    raw = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps(raw | {"vault_token": "old-root-token"}))
    assert LabState.load(tmp_path) == state
