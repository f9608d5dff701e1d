"""The component registry: one declaration per component, read by validation, the report, the
Vault roles and the restart logic. A made-up component added in the test only is picked up by
all of them with no other change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pyinfra.api import Inventory

import galley.components as registry
from galley.components.etcd import ETCD
from galley.components.kubernetes import k8s_cert, kubernetes_binary
from galley.components.model import Component, Config, Unit
from galley.etcdctl import CERT, KEY
from galley.inventory.validate import problems
from galley.pki import Identity, RoleSpec
from galley.report import analyse, releases_of
from galley.vault_setup import deploy_paths

SHA = "b" * 64
ROLE = RoleSpec("cloud-controller-manager", "k8s", ("system:cloud-controller-manager",))
# What adding DigitalOcean's cloud-controller-manager as a unit would declare.
CCM = Component(
    name="cloud-controller-manager",
    group="control_plane",
    phase="control plane",
    artifacts=(kubernetes_binary("cloud-controller-manager"),),
    certs=(
        k8s_cert(
            "cloud-controller-manager",
            ROLE,
            lambda host: Identity("system:cloud-controller-manager"),
        ),
    ),
    configs=(Config("/etc/kubernetes/ccm.kubeconfig", "kubernetes/kubeconfig.j2", mode="600"),),
    unit=Unit("cloud-controller-manager", "ccm/ccm.service.j2"),
    checks=("api",),
)


@pytest.fixture
def with_ccm(monkeypatch):
    """The registry with the made-up component in the control-plane phase."""
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, CCM))


def _inventory(**data) -> Inventory:
    return Inventory(
        (
            [("lab-cp-1", {"private_ip": "198.18.0.13"})],
            {
                "cluster_name": "lab",
                "arch": "amd64",
                "kubernetes_version": "1.33.5",
                "api_port": 6443,
            }
            | data,
        ),
        control_plane=(["lab-cp-1"], {}),
    )


def test_every_component_is_declared_once_with_a_phase_and_a_group():
    names = [c.name for c in registry.REGISTRY]
    assert len(names) == len(set(names)) == 10
    assert [p.name for p in registry.PHASES] == ["etcd", "control plane", "flannel", "workers"]
    assert {c.group for c in registry.REGISTRY} == {"etcd", "control_plane", "workers"}


def test_watched_paths_are_derived_from_the_declaration():
    host = _inventory().get_host("lab-cp-1")
    watched = CCM.watched(host)
    assert watched == [
        "/etc/systemd/system/cloud-controller-manager.service",
        "/usr/local/bin/cloud-controller-manager",
        "/opt/galley/cloud-controller-manager/current",
        "/etc/kubernetes/ccm.kubeconfig",
        "/etc/kubernetes/pki/cloud-controller-manager.crt",
        "/etc/kubernetes/pki/cloud-controller-manager.key",
        "/etc/kubernetes/pki/ca.crt",
    ]


def test_a_renamed_certificate_moves_its_watched_paths_with_it():
    member = replace(ETCD.certs[0], reloaded=False)
    etcd = replace(ETCD, certs=(member,))
    assert member.cert_path in etcd.watched(None)
    renamed = replace(etcd, certs=(replace(member, stem="peer"),))
    assert "/etc/etcd/pki/peer.crt" in renamed.watched(None)
    assert member.cert_path not in renamed.watched(None)


def test_a_certificate_its_process_reloads_restarts_nothing_but_a_new_ca_does():
    member = ETCD.certs[0]
    assert member.reloaded
    watched = ETCD.watched(None)
    assert member.cert_path not in watched and member.key_path not in watched
    assert member.ca_path in watched


def test_the_etcdctl_client_is_the_declared_health_check_certificate():
    assert (ETCD.certs[1].cert_path, ETCD.certs[1].key_path) == (CERT, KEY)


def test_validation_picks_up_a_new_component(with_ccm):
    found = [str(p) for p in problems(_inventory(), ["cloud-controller-manager"])]
    assert (
        "lab-cp-1: cloud_controller_manager_checksums: no sha256 for cloud_controller_manager "
        "1.33.5 on amd64"
    ) in found
    pinned = _inventory(cloud_controller_manager_checksums={"1.33.5": {"amd64": SHA}})
    assert not any(
        "cloud_controller_manager" in str(p) for p in problems(pinned, ["control_plane"])
    )
    assert registry.select(["control_plane"])[-1] is CCM


def test_the_vault_roles_and_deploy_paths_pick_up_a_new_component(with_ccm):
    assert ROLE in registry.vault_roles()
    assert deploy_paths("lab", [CCM]) == {
        "lab/pki/k8s/sign/cloud-controller-manager": "update",
        "lab/pki/host/sign/host-identity": "update",
        **{
            f"lab/pki/{m}/{p}": "read"
            for m in ("etcd", "k8s", "host")
            for p in ("ca/pem", "cert/ca")
        },
        "lab/kv/data/galley/lock": "create,read,update",
    }


def test_the_report_lists_and_checks_a_new_component(with_ccm):
    released = releases_of(registry.select(["control_plane"]))
    assert released["cloud-controller-manager"] == "cloud-controller-manager"
    facts = {
        "groups": ["control_plane"],
        "components": ["cloud-controller-manager"],
        "error": None,
        "units": {"cloud-controller-manager": {"load": "loaded", "active": "failed"}},
        "versions": {
            "cloud-controller-manager": {
                "installed": ["1.33.5"],
                "current": "1.33.5",
                "running": None,
            }
        },
    }
    report = analyse({"lab-cp-1": facts}, days=14, now=datetime.now(UTC))
    assert "lab-cp-1: units: cloud-controller-manager: loaded, failed" in map(str, report.problems)
    (versions,) = [t for t in report.tables if t.title == "versions"]
    assert ("lab-cp-1", "cloud-controller-manager", "1.33.5", "1.33.5", "-") in versions.rows
