"""The host firewall: each host's rules from the inventory's groups (the matrix written here
by hand), its settings validated both ways, and the host-side script that never locks the
operator out (run here, with nft, systemctl and systemd-run replaced by recorders)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pyinfra.api import Inventory
from pyinfra.api.util import get_template

from galley.components import HOST_FIREWALL, opened_on
from galley.components.host_firewall import Rule, rules_of, rules_text
from galley.components.model import TEMPLATES
from galley.inventory.validate import problems
from tests.group_data import GROUP_DATA

HOSTS = {
    "t-etcd-1": "10.108.0.11",
    "t-etcd-2": "10.108.0.12",
    "t-etcd-3": "10.108.0.13",
    "t-cp-1": "10.108.0.21",
    "t-cp-2": "10.108.0.22",
    "t-worker-1": "10.108.0.31",
    "t-worker-2": "10.108.0.32",
}
GROUPS = {
    "etcd": ["t-etcd-1", "t-etcd-2", "t-etcd-3"],
    "control_plane": ["t-cp-1", "t-cp-2"],
    "workers": ["t-worker-1", "t-worker-2"],
}
ETCD = "10.108.0.11/32 10.108.0.12/32 10.108.0.13/32"
CONTROL_PLANE = "10.108.0.21/32 10.108.0.22/32"
WORKERS = "10.108.0.31/32 10.108.0.32/32"
OPERATORS = "203.0.113.0/24"


def _inventory(**data) -> Inventory:
    return Inventory(
        (
            [(name, {"private_ip": address}) for name, address in HOSTS.items()],
            GROUP_DATA | {"cluster_name": "t", "firewall_operator_cidrs": [OPERATORS]} | data,
        ),
        **{group: (names, {}) for group, names in GROUPS.items()},
    )


def _rules(inventory: Inventory, name: str) -> dict[tuple[int, str], str]:
    host = inventory.get_host(name)
    return {(r.port, r.protocol): " ".join(r.sources) for r in rules_of(host, opened_on(host))}


def test_each_group_opens_its_ports_to_exactly_the_groups_that_need_them():
    inventory = _inventory()
    ssh = {(22, "tcp"): OPERATORS}
    assert _rules(inventory, "t-etcd-2") == ssh | {
        (2379, "tcp"): f"{ETCD} {CONTROL_PLANE}",
        (2380, "tcp"): ETCD,
    }
    assert _rules(inventory, "t-cp-1") == ssh | {
        (6443, "tcp"): f"{CONTROL_PLANE} {WORKERS} {OPERATORS}",
    }
    # 10256 (kube-proxy's health) only from load balancers: none set, no rule at all.
    assert _rules(inventory, "t-worker-1") == ssh | {
        (8472, "udp"): WORKERS,
        (10250, "tcp"): CONTROL_PLANE,
    }


def test_flannel_etcd_mode_load_balancers_and_extra_rules_open_more():
    inventory = _inventory(
        flannel_mode="etcd",
        firewall_load_balancer_cidrs=["10.108.0.100/32", "2001:db8::/64"],
        firewall_extra_rules=[
            {"port": 9100, "from": ["control_plane", "198.51.100.7/32"], "on": ["workers"]}
        ],
    )
    assert _rules(inventory, "t-etcd-1")[(2379, "tcp")] == f"{ETCD} {CONTROL_PLANE} {WORKERS}"
    worker = _rules(inventory, "t-worker-2")
    assert worker[(10256, "tcp")] == "10.108.0.100/32 2001:db8::/64"
    assert worker[(9100, "tcp")] == f"{CONTROL_PLANE} 198.51.100.7/32"
    assert (9100, "tcp") not in _rules(inventory, "t-cp-1")  # "on" workers only


def test_a_rule_is_one_line_per_address_family_and_the_table_is_replaced_whole():
    rule = Rule(6443, "tcp", ("10.0.0.0/8", "2001:db8::/64"), "kube-apiserver")
    assert rule.lines() == [
        'ip saddr { 10.0.0.0/8 } tcp dport 6443 accept comment "kube-apiserver"',
        'ip6 saddr { 2001:db8::/64 } tcp dport 6443 accept comment "kube-apiserver"',
    ]
    host = _inventory().get_host("t-cp-1")
    lines = rules_text(host, opened_on(host)).splitlines()
    body = [line.strip() for line in lines if not line.startswith("#")]
    assert body[:3] == ["table inet galley", "delete table inet galley", "table inet galley {"]
    assert "type filter hook input priority filter - 10; policy drop;" in body
    assert (
        "ip saddr { 10.108.0.21/32, 10.108.0.22/32, 10.108.0.31/32, 10.108.0.32/32, "
        '203.0.113.0/24 } tcp dport 6443 accept comment "kube-apiserver"'
    ) in body


def _firewall_problems(**data) -> list[str]:
    found = problems(_inventory(**data), [HOST_FIREWALL], {"VAULT_TOKEN": "t"})
    return [str(p) for p in found if "firewall" in str(p)]


def test_settings_are_validated_before_any_host_is_touched():
    assert _firewall_problems() == []
    assert _firewall_problems(host_firewall=False, firewall_operator_cidrs=None) == []
    (missing,) = _firewall_problems(firewall_operator_cidrs=None)
    assert "firewall_operator_cidrs: missing" in missing
    (bad,) = _firewall_problems(firewall_operator_cidrs=["203.0.113.0/33"])
    assert "firewall_operator_cidrs: ['203.0.113.0/33'] is not a list of networks" in bad
    for rule in (
        {"port": 70000, "from": ["workers"]},
        {"port": 9100, "from": ["nobody"]},
        {"port": 9100, "from": ["workers"], "protocol": "sctp"},
        {"port": 9100, "from": ["workers"], "on": ["elsewhere"]},
        {"port": 9100},
    ):
        (bad,) = _firewall_problems(firewall_extra_rules=[rule])
        assert "firewall_extra_rules:" in bad, rule


FAKE = """#!/bin/bash
echo "$(basename "$0") $*" >> "$LOG"
case "$(basename "$0") $1" in
  "nft list") cat "$LIVE" ;;
  "nft -f") cp "$2" "$LIVE" ;;
  "nft delete") rm -f "$LIVE" ;;
esac
exit 0
"""


@pytest.fixture
def script(tmp_path) -> tuple[Path, dict[str, str]]:
    """The host's galley-firewall script over files in ``tmp_path``, with recording fakes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("nft", "systemctl", "systemd-run"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    text = get_template(str(TEMPLATES / "host-firewall/galley-firewall.sh.j2")).render(
        rules=tmp_path / "rules.nft",
        kept=tmp_path / "kept.nft",
        listing=tmp_path / "kept.listing",
        unit="galley-firewall-rollback",
    )
    path = tmp_path / "galley-firewall"
    path.write_text(text)
    path.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "log"),
        "LIVE": str(tmp_path / "live"),
    }
    return path, env


def _run(script, *args: str) -> subprocess.CompletedProcess:
    path, env = script
    return subprocess.run([path, *args], env=env, capture_output=True, text=True)


def _armed(script) -> list[str]:
    """The rollback command the last apply gave systemd-run (what its timer would run)."""
    log = Path(script[1]["LOG"]).read_text().splitlines()
    armed = [line for line in log if line.startswith("systemd-run ")][-1]
    return armed.split()[-3:]  # <script> rollback <token>


def _digest(path: Path) -> str:
    return subprocess.run(
        ["sha256sum", path], capture_output=True, text=True, check=True
    ).stdout.split()[0]


def test_unconfirmed_rules_roll_back_to_the_kept_ones_and_confirmed_ones_stay(script):
    path, env = script
    rules, live = path.parent / "rules.nft", Path(env["LIVE"])
    rules.write_text("first rules\n")
    assert _run(script, "apply", "0" * 64, "30").returncode == 1  # not the rendered file
    assert not live.exists()
    assert _run(script, "apply", _digest(rules), "30").returncode == 0
    assert live.read_text() == "first rules\n"
    first_rollback = _armed(script)
    assert _run(script, "confirm").returncode == 0
    assert (path.parent / "kept.nft").read_text() == "first rules\n"
    # The timer that fires anyway after a confirmation changes nothing.
    subprocess.run(first_rollback, env=env, check=True)
    assert live.read_text() == "first rules\n"

    rules.write_text("rules that cut ssh\n")
    assert _run(script, "apply", _digest(rules), "5").returncode == 0
    assert live.read_text() == "rules that cut ssh\n"
    assert "--on-active=5s" in Path(env["LOG"]).read_text()
    subprocess.run(_armed(script), env=env, check=True)  # nobody confirmed: the timer fires
    assert live.read_text() == "first rules\n"
    late = _run(script, "confirm")
    assert late.returncode == 1 and "the rollback ran already" in late.stderr
    assert (path.parent / "kept.nft").read_text() == "first rules\n"
