"""The component registry: one declaration per component, read by validation, the report, the
Vault roles, secrets and policies, the cluster's RBAC and the restart logic. A made-up
component added in the test only is picked up by all of them with no other change."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from pyinfra.api import Inventory

import galley.components as registry
from galley.components.etcd import ETCD
from galley.components.kubernetes import k8s_cert, kubernetes_binary
from galley.components.model import (
    Component,
    Config,
    Metrics,
    Phase,
    Unit,
    cluster_role,
    cluster_role_binding,
)
from galley.etcd.etcdctl import CERT, HEALTH_CERT, HEALTH_KEY, KEY
from galley.inventory.validate import problems
from galley.ops import vault_bootstrap
from galley.ops.vault_bootstrap import deploy_grants
from galley.report import analyse, releases_of
from galley.settings import COUNT, Setting
from galley.vault import kv
from galley.vault.client import VaultError
from galley.vault.kv import KvSecret
from galley.vault.pki import Identity, RoleSpec

SHA = "b" * 64
ROLE = RoleSpec("cloud-controller-manager", "k8s", ("system:cloud-controller-manager",))
TOKEN = KvSecret("digitalocean/api-token", lambda: {"token": "made-up"})
RBAC = (
    cluster_role(
        "system:cloud-controller-manager",
        [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
    ),
    cluster_role_binding(
        "system:cloud-controller-manager",
        "system:cloud-controller-manager",
        "User",
        "system:cloud-controller-manager",
    ),
)
WORKERS = Setting("ccm_concurrent_workers", 2, COUNT)
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
    metrics=(Metrics("cloud-controller-manager", 10258, mount="k8s"),),
    secrets=(TOKEN,),
    rbac=RBAC,
    settings=(WORKERS,),
    checks=("api",),
)


@pytest.fixture
def with_ccm(monkeypatch):
    """The registry with the made-up component last in the control-plane phase."""
    phases = tuple(
        Phase(p.name, (*p.components, CCM), p.prepare) if p.name == "control plane" else p
        for p in registry.PHASES
    )
    monkeypatch.setattr(registry, "PHASES", phases)
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
    assert len(names) == len(set(names)) == 15
    assert [p.name for p in registry.PHASES] == [
        "monitoring",
        "etcd",
        "control plane",
        "flannel",
        "workers",
    ]
    assert {c.group for c in registry.REGISTRY} == {
        "etcd",
        "control_plane",
        "workers",
        "monitoring",
        None,
    }
    # Every host keeps its firewall (before its phases), serves its metrics and renews its own
    # certificates (with its last phase): components of every host, in no phase.
    assert registry.EVERY_HOST_FIRST == (registry.HOST_FIREWALL,)
    assert registry.EVERY_HOST_LAST == (registry.NODE_EXPORTER, registry.CERT_RENEWAL)
    for component in registry.EVERY_HOST:
        assert component.group is None
        assert not any(component in p.components for p in registry.PHASES)


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


def test_etcdctl_presents_the_declared_maintenance_and_health_check_certificates():
    certs = ETCD.certs_by_stem(None)
    assert (certs["maintenance-client"].cert_path, certs["maintenance-client"].key_path) == (
        CERT,
        KEY,
    )
    health = certs["healthcheck-client"]
    assert (health.cert_path, health.key_path) == (HEALTH_CERT, HEALTH_KEY)


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


def test_the_vault_roles_and_deploy_grants_pick_up_a_new_component(with_ccm):
    assert ROLE in registry.vault_roles()
    grants = deploy_grants("lab", _inventory(), [CCM])
    assert grants.paths == {
        **{
            f"lab/pki/{m}/{p}": "read"
            for m in ("etcd", "k8s", "host")
            for p in ("ca/pem", "cert/ca")
        },
        "lab/kv/data/digitalocean/api-token": "read",
        "lab/pki/host/roles/renew-lab-cp-1-host-identity": "read",
        "lab/pki/k8s/roles/renew-lab-cp-1-cloud-controller-manager": "read",
        "lab/kv/data/galley/lock": "create,read,update",
    }
    pinned = {"exclude_cn_from_sans": True, "format": "pem"}
    assert grants.signs == {
        "lab/pki/host/sign/renew-lab-cp-1-host-identity": {"common_name": "lab-cp-1"} | pinned,
        "lab/pki/k8s/sign/renew-lab-cp-1-cloud-controller-manager": {
            "common_name": "system:cloud-controller-manager"
        }
        | pinned,
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


def test_a_new_component_s_setting_is_validated_from_its_declaration(with_ccm):
    pinned = {"cloud_controller_manager_checksums": {"1.33.5": {"amd64": SHA}}}
    bad = _inventory(**pinned, ccm_concurrent_workers=0)
    assert "lab-cp-1: ccm_concurrent_workers: 0 is not a count of at least 1" in map(
        str, problems(bad, ["control_plane"])
    )
    host = _inventory(**pinned).get_host("lab-cp-1")
    assert WORKERS.of(host.data) == 2  # the declared default


def test_vault_bootstrap_makes_a_new_component_s_secret_for_its_job_only(with_ccm, vault):
    assert TOKEN in vault_bootstrap.plan("lab").secrets
    inventory = _inventory(cluster_domain="cluster.local", service_cidr="10.32.0.0/16")
    changes = vault_bootstrap.bootstrap(vault, "lab", inventory)
    assert "generated lab/kv/digitalocean/api-token" in changes
    assert "created role renew-lab-cp-1-cloud-controller-manager in lab/pki/k8s" in changes

    def token(policy: str):
        made = vault.auth.token.create(policies=[policy], ttl="5m")["auth"]["client_token"]
        return type(vault)(url=vault.url, token=made, verify=vault.session.verify)

    # The control-plane job deploys it and may read its value; the workers' job may not.
    assert kv.read(token("lab-control-plane"), "lab", TOKEN) == {"token": "made-up"}
    with pytest.raises(VaultError):
        kv.read(token("lab-workers"), "lab", TOKEN)
    assert CCM in registry.phase("control plane").components


def test_prometheus_scrapes_a_new_component_s_metrics_through_the_firewall(with_ccm):
    host = _inventory().get_host("lab-cp-1")
    jobs = {job.name: job for job in registry.scrape_jobs_of(host)}
    job = jobs["cloud-controller-manager"]
    assert job.mount == "k8s"  # over TLS, with Prometheus' Kubernetes identity
    labels = {"host": "lab-cp-1", "groups": "control_plane"}
    assert job.targets == [{"targets": ["198.18.0.13:10258"], "labels": labels}]
    opened = [port for name, port in registry.opened_on(host) if name == CCM.name]
    assert [(port.on(host), port.sources) for port in opened] == [(10258, ("monitoring",))]


def test_admin_credentials_keep_a_new_component_s_rbac(with_ccm):
    kinds = [(o["kind"], o["metadata"]["name"]) for o in registry.rbac_objects()]
    assert ("ClusterRole", "system:cloud-controller-manager") in kinds
    assert ("ClusterRoleBinding", "system:cloud-controller-manager") in kinds
    # Every ClusterRole is written before any binding names it.
    assert kinds.index(("ClusterRole", "system:cloud-controller-manager")) < min(
        i for i, (kind, _) in enumerate(kinds) if kind == "ClusterRoleBinding"
    )
