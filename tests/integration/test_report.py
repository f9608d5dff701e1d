"""`galley report` on the lab: every host in one report, and an etcd member certificate
expiring within the `--days` window flagged (exit 1) until the etcd deploy re-signs it."""

from __future__ import annotations

import json

from .conftest import install_member_cert, run_cli

INVENTORY = "inventories/lab.py"


def deploy_etcd() -> None:
    run_cli("pyinfra", "-y", INVENTORY, "deploys/etcd.py")


def report(*args: str):
    return run_cli("galley", "report", INVENTORY, *args, check=False)


def test_every_host_is_in_the_report_and_a_healthy_lab_has_no_problems(cluster):
    result = report("--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert set(document["hosts"]) == {d.name for d in cluster.droplets}
    assert document["problems"] == []
    members = [d.name for d in cluster.droplets if "etcd" in d.roles]
    assert all(document["hosts"][name]["etcd"]["healthy"] for name in members)

    text = report().stdout
    for droplet in cluster.droplets:
        assert f"  {droplet.name} " in text
    assert text.rstrip().endswith("no problems")


def test_a_certificate_expiring_soon_is_flagged_until_redeployed(cluster, vault_client):
    address = cluster.droplet("lab-etcd-2").address
    install_member_cert(vault_client, "lab-etcd-2", address, "1h")
    try:
        # (Fresh, a 1 h certificate has its whole life left: by default it is not flagged.)
        assert report().returncode == 0
        result = report("--days", "1")
        assert result.returncode == 1, result.stdout + result.stderr
        flagged = [line for line in result.stdout.splitlines() if line.startswith("! ")]
        assert any("lab-etcd-2" in line and "/etc/etcd/pki/member.crt" in line for line in flagged)
        assert "lab-etcd-2: certificates: /etc/etcd/pki/member.crt (lab-etcd-2) expires in 0h5" in (
            result.stdout
        )
        assert "\033[" not in result.stdout  # not a terminal: no colour
    finally:
        deploy_etcd()  # re-signs the certificate: later tests see a clean cluster
    assert report().returncode == 0
