"""`galley node remove` (galley.ops.node_remove): refusals before any change, and revocation
against the real OpenBao: the serials read on the host and every certificate naming the node
end on the CRL; other nodes' certificates do not. (Cordon, drain and Node deletion against the
apiserver stand-in are in test_standins.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hvac
import pytest

from galley.journal import Journal
from galley.ops import vault_bootstrap
from galley.ops.node_remove import Removal, RemoveError, refusal
from galley.ops.revocation import (
    issued,
    retire_host,
    revocation_paths,
    revoked_serials,
    vault_serial,
)
from galley.vault import pki
from galley.vault.client import VaultSettings, connect
from galley.vault.renewal import login_path
from tests.group_data import small_cluster
from tests.unit.test_vault_privilege import PLANS, csr, token_client

GROUPS = {"etcd": ["e1"], "control_plane": ["cp1"], "workers": ["w1", "w2", "cp1"]}
K8S, ETCD, HOST = "lab/pki/k8s", "lab/pki/etcd", "lab/pki/host"


@pytest.mark.parametrize(
    ("name", "unreachable", "reason"),
    [
        ("e1", False, "e1 is in the etcd group: node remove takes workers only (galley etcd"),
        ("cp1", True, "cp1 is in the control_plane group: node remove takes workers only"),
        ("gone", False, "gone is not in the inventory's workers group: galley reaches a host"),
        ("w1", False, None),
        ("w1", True, None),
        ("gone", True, None),  # a dead droplet the inventory no longer lists
    ],
)
def test_only_workers_and_only_listed_ones_unless_unreachable(name, unreachable, reason):
    found = refusal(GROUPS, name, unreachable)
    assert (found or "").startswith(reason or "") and (found is None) == (reason is None)


def test_vault_serials_are_written_as_vault_writes_them():
    assert vault_serial(0x39DD2E) == "39:dd:2e"
    assert vault_serial(0x0102) == "01:02"


class Api:
    """A Kubernetes API without the node (already deleted): nothing to cordon or drain."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def node(self, name: str) -> dict:
        from galley.ops.kubeapi import ApiError

        raise ApiError(404, f"nodes {name!r} not found")

    def delete_node(self, name: str) -> bool:
        self.deleted.append(name)
        return False


class Hosts:
    """Host steps that read the given certificates' serials."""

    def __init__(self, certificates: list) -> None:
        self.certificates = certificates

    def clean(self, name, record):
        record(self.certificates)
        return None


@pytest.fixture
def issued_certs(vault):
    """The lab's PKI with certificates signed for two workers (kubelet client and serving)
    and one kube-proxy certificate (a shared identity)."""
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    workers = token_client(vault, "lab-workers")

    def sign(host: str, stem: str) -> str:
        cert = next(cert for cert in PLANS[host].certs if cert.stem == stem)
        parameters = cert.sign_parameters()
        return pki.sign(
            workers, K8S, cert.role, csr(cert.identity), parameters=parameters
        ).certificate

    return {
        "w1-client": sign("lab-worker-1", "kubelet"),
        "w1-serving": sign("lab-worker-1", "kubelet-serving"),
        "w2-client": sign("lab-worker-2", "kubelet"),
        "proxy": sign("lab-worker-1", "kube-proxy"),
    }


def removal(client, hosts, tmp_path) -> Removal:
    journal = Journal.start(tmp_path / "node-remove.json", "lab-worker-1", resume=False)
    return Removal(
        Api(),
        hosts,
        client,
        [ETCD, K8S],
        journal,
        lambda name: login_path("lab", name),
        out=lambda line: None,
    )


def serial(pem: str) -> str:
    return issued(K8S, pem).serial


def test_a_reachable_worker_has_every_certificate_it_holds_and_every_one_naming_it_revoked(
    vault, issued_certs, tmp_path
):
    operator = token_client(vault, "lab-operator")  # the operator's policy is enough
    login = login_path("lab", "lab-worker-1")
    host_ca = vault.secrets.pki.read_ca_certificate(mount_point="lab/pki/host")
    vault.write_data(login, data={"certificate": host_ca})
    on_host = [issued(K8S, issued_certs[key]) for key in ("w1-client", "proxy")]
    revoked = removal(operator, Hosts(on_host), tmp_path).run("lab-worker-1", "lab-worker-1")
    # Vault's cert auth does not read the CRLs: the host's renewal login is gone instead.
    assert vault.read(login) is None
    crl = revoked_serials(vault, K8S)
    expected = {serial(issued_certs[key]) for key in ("w1-client", "w1-serving", "proxy")}
    assert {cert.serial for cert in revoked} == expected
    assert expected <= crl and serial(issued_certs["w2-client"]) not in crl
    status = vault.secrets.pki.read_certificate(serial(issued_certs["w1-serving"]), K8S)
    assert status["data"]["revocation_time"] > 0


def test_an_unreachable_worker_has_the_certificates_naming_it_revoked_found_in_vault(
    vault, issued_certs, tmp_path
):
    work = removal(vault, None, tmp_path)
    revoked = work.run("lab-worker-1", "lab-worker-1")
    assert {cert.cn for cert in revoked} == {"system:node:lab-worker-1", "lab-worker-1"}
    crl = revoked_serials(vault, K8S)
    assert serial(issued_certs["proxy"]) not in crl  # names no host: only the host knows it
    record = work.journal.node("lab-worker-1")
    assert (record["state"], record["host"]) == ("done", "skipped (unreachable)")
    assert work.journal.data["status"] == "finished"
    # Run again: nothing left naming the node (revoked ones are not listed again).
    again = Journal.start(tmp_path / "node-remove.json", "lab-worker-1", resume=False)
    rerun = Removal(Api(), None, vault, [K8S], again, out=lambda line: None)
    assert rerun.run("lab-worker-1", "lab-worker-1") == []


def test_a_host_step_that_fails_stops_before_the_node_is_deleted(vault, tmp_path):
    class Failing:
        def clean(self, name, record):
            return "the host work did not finish (pyinfra: unreachable)"

    work = removal(vault, Failing(), tmp_path)
    with pytest.raises(RemoveError, match=r"^lab-worker-1: the host work did not finish"):
        work.run("lab-worker-1", "lab-worker-1")
    assert work.api.deleted == [] and work.journal.node("lab-worker-1")["state"] == "drained"


def test_the_operator_token_passes_the_capability_check_and_a_workers_token_does_not(
    vault, tmp_path
):
    vault_bootstrap.bootstrap(vault, "lab", small_cluster())
    for policy, allowed in (("lab-operator", True), ("lab-workers", False)):
        token_file = tmp_path / policy
        token_file.write_text(token_client(vault, policy).token)
        settings = VaultSettings.from_data(
            {"cluster_name": "lab", "vault_addr": vault.url, "vault_token_file": str(token_file)}
            | {"vault_ca_cert": vault.session.verify}
        )
        if allowed:
            assert isinstance(connect(settings, revocation_paths("lab")), hvac.Client)
        else:
            with pytest.raises(Exception, match="token lacks 'list' on lab/pki/etcd/certs"):
                connect(settings, revocation_paths("lab"))


def test_the_command_refuses_before_reaching_any_api_vault_or_host(tmp_path):
    # Through the real CLI in its own process (loading an inventory patches the stdlib for
    # gevent, which must not leak into the other tests' TLS clients).
    inventory = tmp_path / "inventory.py"
    data = {"cluster_name": "lab", "galley_config_dir": str(tmp_path)}
    inventory.write_text(
        f"etcd = [('e1', {data} | {{'private_ip': '127.0.9.1'}})]\n"
        f"control_plane = [('cp1', {data} | {{'private_ip': '127.0.9.2'}})]\n"
        f"workers = [('w1', {data} | {{'private_ip': '127.0.9.3'}})]\n"
    )
    galley = Path(sys.executable).parent / "galley"
    for name, flags, said in (
        ("e1", [], "e1 is in the etcd group"),
        ("gone", [], "gone is not in the inventory's workers group"),
        ("w1", ["--unreachable"], "no admin credential in"),  # the next check: nothing changed
    ):
        done = subprocess.run(
            [galley, "node", "remove", str(inventory), name, "--yes", *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"galley: node remove: {said}"), done.stderr
        assert "(nothing was changed)" in done.stderr
    assert not (tmp_path / "lab").exists()


def test_retiring_a_host_revokes_what_names_it_and_deletes_its_login(vault, issued_certs):
    login = login_path("lab", "lab-worker-1")
    vault.write_data(
        login, data={"certificate": vault.secrets.pki.read_ca_certificate(mount_point=HOST)}
    )
    lines = retire_host(vault, "lab", "lab-worker-1", [K8S, HOST])
    crl = revoked_serials(vault, K8S)
    assert {serial(issued_certs[key]) for key in ("w1-client", "w1-serving")} <= crl
    assert not {serial(issued_certs[key]) for key in ("w2-client", "proxy")} & crl
    assert vault.read(login) is None and lines[-1] == f"deleted its renewal login {login}"
    assert retire_host(vault, "lab", "lab-worker-1", [K8S]) == []  # nothing left naming it
