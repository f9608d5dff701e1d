"""`galley cloud-firewall` against the DigitalOcean API stand-in: the request bodies carry the
host firewall's matrix (written here by hand), a second run writes nothing, --dry writes
nothing, a new worker is one update naming what it opens, and refusals are one line."""

from __future__ import annotations

import pytest
import requests
from pyinfra.api import Inventory

from galley.ops.cloud_firewall import cloud_firewall_cli, wanted_firewalls
from tests.group_data import GROUP_DATA
from tests.standins.digitalocean_api import serve

TOKEN = "dop_v1_test"
HOSTS = {
    "t-etcd-1": ("10.108.0.11", 101),
    "t-etcd-2": ("10.108.0.12", 102),
    "t-etcd-3": ("10.108.0.13", 103),
    "t-cp-1": ("10.108.0.21", 201),
    "t-cp-2": ("10.108.0.22", 202),
    "t-worker-1": ("10.108.0.31", 301),
    "t-worker-2": ("10.108.0.32", 302),
}
ETCD = ["10.108.0.11/32", "10.108.0.12/32", "10.108.0.13/32"]
CONTROL_PLANE = ["10.108.0.21/32", "10.108.0.22/32"]
WORKERS = ["10.108.0.31/32", "10.108.0.32/32"]
OPERATORS = ["203.0.113.0/24"]
ICMP = {"protocol": "icmp", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}


def _inventory(hosts=HOSTS, **data) -> Inventory:
    groups = {
        "etcd": [n for n in hosts if "etcd" in n],
        "control_plane": [n for n in hosts if "-cp-" in n],
        "workers": [n for n in hosts if "worker" in n],
    }
    return Inventory(
        (
            [(n, {"private_ip": ip, "droplet_id": i}) for n, (ip, i) in hosts.items()],
            GROUP_DATA | {"cluster_name": "t", "firewall_operator_cidrs": OPERATORS} | data,
        ),
        **{group: (names, {}) for group, names in groups.items()},
    )


def _rule(protocol: str, port: int, addresses: list[str]) -> dict:
    return {"protocol": protocol, "ports": str(port), "sources": {"addresses": addresses}}


def test_each_groups_firewall_carries_the_matrix_and_its_droplets():
    wanted = wanted_firewalls(_inventory())
    assert {name: body["droplet_ids"] for name, body in wanted.items()} == {
        "galley-t-etcd": [101, 102, 103],
        "galley-t-control-plane": [201, 202],
        "galley-t-workers": [301, 302],
    }
    ssh = _rule("tcp", 22, OPERATORS)
    assert wanted["galley-t-etcd"]["inbound_rules"] == [
        ssh,
        _rule("tcp", 2379, sorted(ETCD + CONTROL_PLANE)),
        _rule("tcp", 2380, ETCD),
        ICMP,
    ]
    assert wanted["galley-t-control-plane"]["inbound_rules"] == [
        ssh,
        _rule("tcp", 6443, sorted(CONTROL_PLANE + WORKERS + OPERATORS)),
        ICMP,
    ]
    assert wanted["galley-t-workers"]["inbound_rules"] == [
        ssh,
        _rule("tcp", 10250, CONTROL_PLANE),
        _rule("udp", 8472, WORKERS),
        ICMP,
    ]
    outbound = wanted["galley-t-workers"]["outbound_rules"]
    assert {(r["protocol"], r.get("ports")) for r in outbound} == {
        ("tcp", "all"),
        ("udp", "all"),
        ("icmp", None),
    }


def _run(inventory: Inventory, api, dry: bool = False) -> int:
    environ = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url}
    return cloud_firewall_cli(inventory, dry, environ)


def test_dry_writes_nothing_then_a_run_creates_and_a_second_run_writes_nothing(capsys):
    with serve([], TOKEN) as api:
        assert _run(_inventory(), api, dry=True) == 0
        assert api.writes() == []
        dry = capsys.readouterr().out.splitlines()
        assert dry[0] == "would create Cloud Firewall galley-t-etcd: 3 droplets, 4 inbound rules"
        assert dry[-1] == "--dry: 3 change(s) not made"

        assert _run(_inventory(), api) == 0
        assert [(w["method"], w["body"]["name"]) for w in api.writes()] == [
            ("POST", "galley-t-etcd"),
            ("POST", "galley-t-control-plane"),
            ("POST", "galley-t-workers"),
        ]
        assert capsys.readouterr().out.splitlines() == [
            line.removeprefix("would ") for line in dry[:-1]
        ]

        writes = len(api.writes())
        assert _run(_inventory(), api) == 0
        assert len(api.writes()) == writes
        assert capsys.readouterr().out == "Cloud Firewalls of t: as the inventory says, no change\n"


def test_a_new_worker_is_one_update_per_firewall_it_changes(capsys):
    grown = HOSTS | {"t-worker-3": ("10.108.0.33", 303)}
    with serve([], TOKEN) as api:
        _run(_inventory(), api)
        capsys.readouterr()
        before = len(api.writes())
        assert _run(_inventory(grown), api) == 0
        updates = api.writes()[before:]
        assert [(w["method"], w["body"]["name"]) for w in updates] == [
            ("PUT", "galley-t-control-plane"),
            ("PUT", "galley-t-workers"),
        ]
        assert capsys.readouterr().out.splitlines() == [
            "update Cloud Firewall galley-t-control-plane: inbound tcp 6443 "
            "+addresses:10.108.0.33/32",
            "update Cloud Firewall galley-t-workers: inbound udp 8472 +addresses:10.108.0.33/32; "
            "droplets +303",
        ]
        before = len(api.writes())
        _run(_inventory(grown), api)
        assert len(api.writes()) == before
        # Back to two workers: the same firewalls again, the third worker's droplet detached.
        _run(_inventory(), api)
        assert "droplets -303" in capsys.readouterr().out


def test_refusals_are_one_line_before_any_write(capsys):
    no_id = HOSTS | {"t-worker-2": ("10.108.0.32", None)}
    with serve([], TOKEN) as api:
        assert _run(_inventory(no_id), api) == 1
        assert capsys.readouterr().err == (
            "galley: cloud-firewall: t-worker-2: no droplet_id: Cloud Firewalls attach droplets "
            "by id (an inventory from the DigitalOcean API or Terraform has them)\n"
        )
        assert cloud_firewall_cli(_inventory(), False, {"DIGITALOCEAN_API_URL": api.url}) == 1
        assert "set DIGITALOCEAN_TOKEN" in capsys.readouterr().err
        wrong = {"DIGITALOCEAN_TOKEN": "dop_v1_wrong", "DIGITALOCEAN_API_URL": api.url}
        assert cloud_firewall_cli(_inventory(), False, wrong) == 1
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "401 Unauthorized" in error
        assert api.writes() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "-x", "inbound_rules": [ICMP]}, "name must begin"),
        ({"name": "x"}, "at least one"),
        ({"name": "x", "inbound_rules": [_rule("tcp", 70000, OPERATORS)]}, "is not a port"),
        ({"name": "x", "inbound_rules": [_rule("sctp", 1, OPERATORS)]}, "protocol"),
    ],
)
def test_the_standin_refuses_what_the_api_refuses(body, message):
    """The stand-in holds galley to the API's shapes: galley's own bodies pass above."""
    with serve([], TOKEN) as api:
        answer = requests.post(
            f"{api.url}/v2/firewalls",
            json=body,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
    assert answer.status_code == 422
    assert answer.json()["id"] == "unprocessable_entity" and message in answer.json()["message"]
