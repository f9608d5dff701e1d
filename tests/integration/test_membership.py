"""The lab grows and breaks like a region, and the deploy follows: etcd droplets join as
learners and become voters, a dead member's fresh droplet replaces it, a deploy killed after
`member add` is finished by the next, members leave through `galley etcd remove` (and one
removed while down, back with its old data dir, is named while preparing), and a worker joins
and leaves through `galley node remove`. Real etcd, the real CLIs; a writer puts a key
every 50 ms through every member and must see no failed write."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import requests

from galley.components.kubelet import CLIENT as KUBELET
from galley.components.monitoring import target_file
from galley.etcd.etcdctl import etcdctl_command
from galley.lab.state import LabState
from galley.ops.kubeapi import ApiError, KubeApi, node_ready
from galley.ops.revocation import revoked_serials
from galley.vault.pki import load_certificate
from tests.etcd_writer import Writer

from .conftest import (
    BIN,
    FIREWALL_CHANGES,
    REPO,
    admin_files,
    changed,
    endpoints,
    lab_add,
    lab_inventory_variant,
    lab_vault,
    pyinfra_json,
    reaches,
    run_cli,
    run_deploy,
    scrape_targets,
    ssh,
    unit_starts,
    wait_for,
)

DEFAULT_ETCD = ["lab-etcd-1", "lab-etcd-2", "lab-etcd-3"]


def members() -> list[dict]:
    """`etcdctl member list` as the first default member sees it, by name."""
    listing = ssh(
        "lab-etcd-1", etcdctl_command(["https://127.0.0.1:2379"], "member", "list", "-w", "json")
    )
    return sorted(json.loads(listing)["members"], key=lambda member: member.get("name", ""))


def voters() -> dict[str, str]:
    """Voting members: name -> member id (hex); asserts no learner is left."""
    listed = members()
    assert not [m for m in listed if m.get("isLearner")], listed
    return {m["name"]: f"{m['ID']:x}" for m in listed}


def etcd_servers(name: str) -> list[str]:
    """The `--etcd-servers` of the kube-apiserver running on ``name``."""
    args = ssh(
        name, "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value kube-apiserver)/cmdline"
    )
    flag = next(arg for arg in args.splitlines() if arg.startswith("--etcd-servers="))
    return flag.split("=", 1)[1].split(",")


def etcd_started() -> dict[str, str]:
    """When each member's etcd last started (a restart changes it)."""
    facts = pyinfra_json("fact", "galley.facts.UnitStates", "units=etcd", "--limit", "etcd")
    return {host: str(units["etcd"]["since"]) for host, units in facts.popitem()[1].items()}


def every_member_healthy() -> bool:
    health = pyinfra_json("fact", "galley.facts.EtcdHealth", "--limit", "etcd").popitem()[1]
    return all(h["healthy"] for h in health.values())


@contextmanager
def writing(client: tuple) -> Iterator[Writer]:
    """A writer through every etcd member of the lab (re-read when the test says so), with
    ``client``: its certificate files and the writer program."""
    writer = Writer(endpoints(LabState.load()), *client)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop.set()
        writer.join()


def follow_lab(writer: Writer) -> None:
    """Point the writer at the lab's etcd members as they are now."""
    writer.urls[:] = endpoints(LabState.load())


def admit(*names: str) -> None:
    """Run the deploy (refused, naming each new droplet), then admit them."""
    code, _, output = run_deploy("cluster", check=False)
    assert code != 0, output
    for name in names:
        assert f"{name} (droplet id" in output, output
        run_cli("galley", "hostkeys", "accept", "inventories/lab.py", name)


def restore_default_lab() -> None:
    """Back to 3 etcd members and the default droplets, whatever a failed test left."""
    state = LabState.load()
    for droplet in state.droplets:
        if "etcd" in droplet.roles and droplet.name not in DEFAULT_ETCD:
            run_cli(
                "galley",
                "etcd",
                "remove",
                "inventories/lab.py",
                droplet.name,
                "--allow-even",
                "--yes",
                check=False,
            )
            run_cli("galley", "lab", "remove", droplet.name, check=False)
        elif droplet.name == "lab-worker-3":
            run_cli("galley", "lab", "remove", droplet.name, check=False)
    run_deploy("cluster")


@pytest.fixture(scope="module")
def lab_grows(cluster, client_cert, etcd_writer) -> Iterator[tuple]:
    yield cluster, (client_cert, etcd_writer)
    restore_default_lab()


def test_two_etcd_droplets_join_as_learners_and_become_voters(lab_grows):
    _, cert = lab_grows
    lab_add("etcd", 2)
    admit("lab-etcd-4", "lab-etcd-5")
    before = {host: since for host, since in etcd_started().items() if host in DEFAULT_ETCD}

    with writing(cert) as writer:
        code, results, output = run_deploy("cluster")
    assert code == 0, output
    assert writer.ok > 20 and writer.failed == [], writer.failed

    assert sorted(voters()) == [*DEFAULT_ETCD, "lab-etcd-4", "lab-etcd-5"]
    assert every_member_healthy()
    for step in (
        "lab-etcd-4 (https://198.18.0.18:2380) as a learner",
        "promote learner lab-etcd-5",
    ):
        assert step in output
    assert {host: since for host, since in etcd_started().items() if host in DEFAULT_ETCD} == before
    urls = endpoints(LabState.load())
    for name in ("lab-cp-1", "lab-cp-2"):
        assert sorted(etcd_servers(name)) == sorted(urls)
    code, results, output = run_deploy("cluster")
    assert (code, changed(results)) == (0, {}), output


def test_a_dead_members_fresh_droplet_replaces_it(lab_grows):
    _, cert = lab_grows
    old = voters()["lab-etcd-2"]
    with writing(cert) as writer:
        run_cli("galley", "lab", "kill", "lab-etcd-2")
        run_cli("galley", "lab", "replace", "lab-etcd-2")
        admit("lab-etcd-2")
        code, _, output = run_deploy("cluster")
    assert code == 0, output
    assert writer.ok > 20 and writer.failed == [], writer.failed
    assert f"remove member lab-etcd-2 [{old} https://198.18.0.11:2380]" in output
    now = voters()
    assert len(now) == 5 and now["lab-etcd-2"] != old and old not in now.values()
    assert every_member_healthy()


def test_a_deploy_killed_after_member_add_is_finished_by_the_next(lab_grows):
    _, cert = lab_grows
    with writing(cert) as writer:
        run_cli("galley", "lab", "kill", "lab-etcd-4")
        run_cli("galley", "lab", "replace", "lab-etcd-4")
        admit("lab-etcd-4")
        deploy = subprocess.Popen(
            [str(BIN / "pyinfra"), "-y", "inventories/lab.py", "deploys/cluster.py"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        seen = []
        for line in deploy.stdout:
            seen.append(line)
            if "lab-etcd-4 added as learner" in line:
                os.killpg(deploy.pid, signal.SIGKILL)
                break
        deploy.wait()
        assert "lab-etcd-4 added as learner" in seen[-1], "".join(seen)
        pending = [m for m in members() if m.get("isLearner")]
        assert [m.get("name", "") for m in pending] == [""]  # added, never started

        code, _, output = run_deploy("cluster")
    assert code == 0, output
    assert writer.ok > 20 and writer.failed == [], writer.failed
    assert "start lab-etcd-4" in output and "add lab-etcd-4" not in output
    assert len(voters()) == 5 and every_member_healthy()


def etcd_remove(name: str, *flags: str):
    return run_cli("galley", "etcd", "remove", "inventories/lab.py", name, *flags, check=False)


def test_members_leave_through_etcd_remove_one_at_a_time(lab_grows):
    _, cert = lab_grows
    with writing(cert) as writer:
        refused = etcd_remove("lab-etcd-5", "--yes")
        assert refused.returncode == 2 and "pass --allow-even" in refused.stderr, refused.stderr
        assert len(voters()) == 5

        left = etcd_remove("lab-etcd-5", "--allow-even", "--yes")
        assert left.returncode == 0, left.stdout + left.stderr
        assert sorted(voters()) == [*DEFAULT_ETCD, "lab-etcd-4"]
        # Its certificates are revoked, its renewal login deleted.
        assert "(lab-etcd-5, lab/pki/etcd): on the CRL" in left.stdout, left.stdout
        assert "(lab-etcd-5, lab/pki/host): on the CRL" in left.stdout
        assert lab_vault(LabState.load()).read("auth/lab/host-cert/certs/lab-etcd-5") is None
        gone = ssh(
            "lab-etcd-5",
            "systemctl is-active etcd galley-cert-renewal.timer; ls -A /var/lib/etcd; "
            "ls /etc/etcd/pki | grep -v ca.crt",
            check=False,
        )
        assert gone.split() == ["inactive", "inactive"], gone  # no data, no key, no certificate
        again = etcd_remove("lab-etcd-5", "--allow-even", "--yes")
        assert again.returncode == 0 and "already removed" in again.stdout, again.stdout
        run_cli("galley", "lab", "remove", "lab-etcd-5")
        follow_lab(writer)
    assert writer.ok > 20 and writer.failed == [], writer.failed


def test_a_member_removed_while_down_is_named_when_its_droplet_comes_back(lab_grows, tmp_path):
    _, cert = lab_grows
    with writing(cert) as writer:
        # lab-etcd-4 dies and leaves through `--unreachable`, then comes back with its disk:
        # the next deploy names its stale data dir while preparing and changes nothing.
        run_cli("galley", "lab", "kill", "lab-etcd-4")
        (removed,) = [m for m in members() if m["name"] == "lab-etcd-4"]
        left = etcd_remove("lab-etcd-4", "--unreachable", "--yes")
        assert left.returncode == 0, left.stdout + left.stderr
        assert sorted(voters()) == DEFAULT_ETCD
        run_cli("galley", "lab", "start", "lab-etcd-4")
        _refuses_the_removed_members_data(tmp_path, format(removed["ID"], "x"))
        run_cli("galley", "lab", "remove", "lab-etcd-4")
        follow_lab(writer)
        refused = etcd_remove("lab-etcd-3", "--yes")
        assert refused.returncode == 2 and "would leave 2 voters" in refused.stderr
        code, _, output = run_deploy("cluster")
    assert code == 0, output
    assert writer.ok > 20 and writer.failed == [], writer.failed
    assert sorted(voters()) == DEFAULT_ETCD and every_member_healthy()
    for name in ("lab-cp-1", "lab-cp-2"):
        assert sorted(etcd_servers(name)) == sorted(endpoints(LabState.load()))


def _refuses_the_removed_members_data(tmp_path, member_id: str) -> None:
    """The etcd deploy, with the removed member's droplet back in the inventory, stops while
    preparing with one line naming its data dir and member, and changes nothing."""
    even = lab_inventory_variant(
        tmp_path,
        "etcd = [(name, {**data, 'etcd_allow_even_members': True}) for name, data in etcd]\n",
    )
    # (The removed member's own etcd keeps exiting on its old data, restarted by systemd.)
    listed, starts = members(), unit_starts("lab-etcd-4")
    began = time.monotonic()
    code, _, output = run_deploy("etcd", inventory=even, check=False)
    assert code == 1 and time.monotonic() - began < 20  # no 60 s wait for health
    (line,) = [line for line in output.splitlines() if "lab-etcd-4: its etcd data dir" in line]
    assert line.endswith(
        f"lab-etcd-4: its etcd data dir /var/lib/etcd holds member {member_id}, which is no "
        "longer in the etcd cluster (removed, e.g. by `galley etcd remove --unreachable`); "
        "nothing was changed: wipe it on the host (`systemctl disable --now etcd && rm -rf "
        "/var/lib/etcd/member`) so the next deploy adds it as a new member, or replace the "
        "droplet"
    )
    assert "Traceback" not in output
    assert members() == listed and unit_starts("lab-etcd-4") == starts


def _prometheus_started() -> str:
    """When the monitoring host's Prometheus process started (a reload keeps it)."""
    return ssh("lab-mon-1", "systemctl show -p ExecMainStartTimestamp prometheus")


def _still_authenticates_for_at_most_48h(copied: dict[str, str], url: str, directory) -> None:
    cert_file, key_file = directory / "kubelet.crt", directory / "kubelet.key"
    cert_file.write_text(copied[KUBELET.cert_path])
    key_file.write_text(copied[KUBELET.key_path])
    answer = requests.get(
        f"{url}/api/v1/nodes/lab-worker-3",
        cert=(str(cert_file), str(key_file)),
        verify=str(admin_files().ca),
        timeout=10,
    )
    assert answer.status_code in (403, 404), answer.text
    left = load_certificate(copied[KUBELET.cert_path]).not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=47) < left <= timedelta(hours=48), left


def test_a_new_worker_joins_alone_and_node_remove_takes_it_out(lab_grows, tmp_path):
    lab, _ = lab_grows
    prometheus_started = _prometheus_started()
    lab_add("worker")
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    # Beside the new worker only the rule sets of the hosts it must reach (the apiservers)
    # or that reach it (the other workers' VXLAN) changed, and the monitoring host's targets.
    beside = {op: hosts - {"lab-worker-3"} for op, hosts in changed(results).items()}
    peers = {"lab-cp-1", "lab-cp-2", "lab-worker-1", "lab-worker-2"}
    targets = {f"monitoring | {target_file(job)}" for job in ("node", "api-proxy", "kubelet")}
    assert {op: hosts for op, hosts in beside.items() if hosts} == dict.fromkeys(
        FIREWALL_CHANGES, peers
    ) | {target: {"lab-mon-1"} for target in targets}
    address = LabState.load().droplet("lab-worker-3").address
    assert reaches("lab-cp-1", address, 10250) and not reaches("lab-worker-1", address, 10250)
    api = KubeApi(
        [f"https://{d.address}:6443" for d in lab.droplets if "control_plane" in d.roles],
        admin_files(),
    )

    def ready() -> bool:
        try:
            return node_ready(api.node("lab-worker-3"))
        except ApiError:
            return False

    assert wait_for(ready, 60)
    # Prometheus scrapes it from then on, without a restart.
    for job in ("node", "api-proxy", "kubelet"):
        assert wait_for(lambda job=job: scrape_targets(lab).get((job, "lab-worker-3")) == "up", 30)
    assert _prometheus_started() == prometheus_started

    # A copy of its kubelet's credential, as one stolen before the removal.
    copied = {
        path: ssh("lab-worker-3", f"cat {path}") for path in (KUBELET.cert_path, KUBELET.key_path)
    }
    removed = run_cli("galley", "node", "remove", "inventories/lab.py", "lab-worker-3", "--yes")
    with pytest.raises(ApiError) as gone:
        api.node("lab-worker-3")
    assert gone.value.status == 404
    serials = dict(re.findall(r"revoked (\S+) \(.+, (\S+)\): on the CRL", removed.stdout))
    assert len(serials) >= 4, removed.stdout  # kubelet client and serving, kube-proxy, host
    root = lab_vault(lab)
    for serial, mount in serials.items():
        assert serial in revoked_serials(root, mount)
    assert root.read("auth/lab/host-cert/certs/lab-worker-3") is None
    # kube-apiserver reads no CRL: the copy still authenticates (403 or 404, never 401) until
    # it expires, which client_cert_ttl puts at most 48 h after its issue (README).
    _still_authenticates_for_at_most_48h(copied, api.server, tmp_path)
    units = ssh(
        "lab-worker-3",
        "systemctl is-active kubelet kube-proxy galley-cert-renewal.timer",
        check=False,
    )
    assert "active\n" not in units.replace("inactive", "")
    run_cli("galley", "lab", "remove", "lab-worker-3")
    # The next deploy closes its ports on the others again.
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    assert changed(results) == dict.fromkeys(FIREWALL_CHANGES, peers) | {
        target: {"lab-mon-1"} for target in targets
    }
    assert address not in ssh("lab-cp-1", "nft list table inet galley")
