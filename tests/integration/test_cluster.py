"""The whole cluster on the lab through the real pyinfra CLI: etcd, control plane, flannel and
workers as systemd units, Vault-signed identities, idempotence, the apiservers' real etcd
wiring, and bad input refused before any host changes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from galley.components import REGISTRY, certificates_of, running_on
from galley.components.kubernetes import K8S_DIR
from galley.lab.artifacts import ARTIFACTS
from galley.lab.artifacts import KUBERNETES_UPGRADE_VERSION as B
from galley.lab.state import CACHE_DIR
from galley.ops.kubeapi import ApiError, KubeApi
from galley.vault.pki import identity_of_cert, load_certificate

from .conftest import (
    CRASH_ETCD,
    INVENTORY,
    admin_files,
    alerts,
    changed,
    healthz,
    hosts_of,
    lab_inventory_variant,
    on_each,
    pyinfra_json,
    run_cli,
    run_deploy,
    ssh,
    ssh_run,
    wait_for,
)

UNITS = {
    "control_plane": ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    "workers": ("api-proxy", "containerd", "flanneld", "kubelet", "kube-proxy"),
    "monitoring": ("prometheus", "alertmanager"),
    # Every host.
    "all": ("node-exporter",),
}
UNIT_PATHS = {c.unit.name: c.unit.path for c in REGISTRY if c.unit}
KUBECONFIGS = {
    "control_plane": ("controller-manager", "scheduler"),
    "workers": ("kubelet", "kube-proxy", "flannel"),
}


def test_phases_run_in_order_across_hosts(cluster):
    """No operation of a phase runs before the previous phase is done on every host. (Each
    phase is given work on every host of its group first, whatever earlier tests did: a unit
    file of each chmodded, so the run writes its mode back and reloads systemd, no restart.)"""
    for group, unit in (
        ("etcd", "etcd"),
        ("control_plane", "kube-scheduler"),
        ("workers", "flanneld"),
        ("workers", "kubelet"),
    ):
        for name in hosts_of(cluster, group):
            ssh(name, f"chmod 600 /etc/systemd/system/{unit}.service")
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    phases = ("etcd |", "control plane |", "flannel |", "workers |")
    order = [
        next(index for index, prefix in enumerate(phases) if op["name"].startswith(prefix))
        for op in results["operations"]
        if op["name"].startswith(phases) and op["success"]
    ]
    assert order == sorted(order)
    assert set(order) == {0, 1, 2, 3}
    assert not [name for name in changed(results) if "Restart" in name]


def test_every_unit_is_active_and_passes_systemd_analyze_verify(cluster):
    for group, units in UNITS.items():
        names = [d.name for d in cluster.droplets] if group == "all" else hosts_of(cluster, group)
        for name in names:
            states = ssh(name, f"systemctl is-active {' '.join(units)}", check=False).split()
            assert states == ["active"] * len(units), (name, dict(zip(units, states, strict=False)))
            paths = " ".join(UNIT_PATHS[unit] for unit in units)
            verified = ssh_run(name, f"systemd-analyze verify {paths}")
            assert verified.returncode == 0, (name, verified.stdout + verified.stderr)


def _kubectl_view(kubectl: Path, kubeconfig: Path) -> dict:
    result = subprocess.run(
        [str(kubectl), "config", "view", "--kubeconfig", str(kubeconfig), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (kubeconfig, result.stderr)
    return json.loads(result.stdout)


# Runs the conflist's first plugin (flannel) by hand, as containerd would for a pod sandbox.
_CNI = (
    "set -e; ip netns add galley-cni-test; "
    'python3 -c \'import json; c = json.load(open("/etc/cni/net.d/10-flannel.conflist")); '
    'p = c["plugins"][0]; p.update(name=c["name"], cniVersion=c["cniVersion"]); '
    "print(json.dumps(p))' > /tmp/galley-cni-test.json; "
    "export CNI_CONTAINERID=galley-cni-test CNI_NETNS=/var/run/netns/galley-cni-test "
    "CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin; "
    "CNI_COMMAND=ADD /opt/cni/bin/flannel < /tmp/galley-cni-test.json; echo '=== netns'; "
    "ip netns exec galley-cni-test ip -4 -o addr show eth0; "
    "ip netns exec galley-cni-test ip -4 route; echo '=== del'; "
    "CNI_COMMAND=DEL /opt/cni/bin/flannel < /tmp/galley-cni-test.json; "
    "ls /var/lib/cni/networks/cbr0; ip netns del galley-cni-test"
)


# The processes of galley's units as `ss` names them (their first 15 characters).
GALLEY_PROCESSES = {
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "flanneld",
    "haproxy",
    "containerd",
    "node_exporter",
    "prometheus",
    "alertmanager",
}
# What each group must be found listening on: (address, port), "private" for the droplet's.
EXPECTED_LISTENERS = {
    "etcd": {("private", 2379), ("127.0.0.1", 2379), ("private", 2380), ("private", 2381)},
    "control_plane": {("private", 6443), ("private", 10257), ("private", 10259)},
    "workers": {("private", 10250), ("private", 10256), ("127.0.0.1", 6443), ("private", 8405)},
    "monitoring": {("private", 9090), ("private", 9093)},
    "all": {("private", 9100)},
}


def _listeners(name: str) -> set[tuple[str, str, int]]:
    """Every TCP and UDP socket listening on droplet ``name``: (process, address, port)."""
    found = set()
    for line in ssh(name, "ss -Hltnup").splitlines():
        fields = line.split()
        address, port = fields[4].rsplit(":", 1)
        process = fields[6].split('"')[1] if len(fields) > 6 else ""
        found.add((process, address.split("%")[0].strip("[]"), int(port)))
    return found


def test_galleys_servers_listen_on_the_private_address_or_loopback_only(cluster):
    for droplet in cluster.droplets:
        listening = _listeners(droplet.name)
        ours = {
            (address, port) for process, address, port in listening if process in GALLEY_PROCESSES
        }
        allowed = {droplet.address, "127.0.0.1", "::1"}
        assert {(a, p) for a, p in ours if a not in allowed} == set(), (droplet.name, listening)
        groups = ("all", *droplet.roles)
        expected = set().union(*(EXPECTED_LISTENERS[group] for group in groups))
        wanted = {(droplet.address if a == "private" else a, p) for a, p in expected}
        assert wanted <= ours, (droplet.name, wanted - ours)


def test_pod_network_namespace_gets_an_address_from_the_nodes_flannel_lease(cluster):
    """The CNI chain containerd runs for a pod: flannel's plugin, the real bridge and
    host-local plugins, this node's lease from flanneld."""
    worker = hosts_of(cluster, "workers")[0]
    lease = dict(line.split("=", 1) for line in ssh(worker, "cat /run/flannel/subnet.env").split())
    gateway = ipaddress.ip_interface(lease["FLANNEL_SUBNET"])
    added, _, rest = ssh(worker, _CNI).partition("=== netns")
    netns, _, after_delete = rest.partition("=== del")

    result = json.loads(added)
    (address,) = [ipaddress.ip_interface(ip["address"]) for ip in result["ips"]]
    assert address.network == gateway.network and address != gateway
    assert f"inet {address}" in netns
    assert f"{lease['FLANNEL_NETWORK']} via {gateway.ip} dev eth0" in netns
    assert str(address.ip) not in after_delete  # host-local released it


def test_real_kubectl_accepts_every_generated_kubeconfig(cluster, kubectl, tmp_path):
    first_cp = next(d.address for d in cluster.droplets if "control_plane" in d.roles)
    address = {d.name: d.address for d in cluster.droplets}
    for group, names in KUBECONFIGS.items():
        for host in hosts_of(cluster, group):
            # Its own apiserver on a control-plane host (at the one address it listens on),
            # the node-local proxy on a worker.
            server = address[host] if group == "control_plane" else "127.0.0.1"
            for name in names:
                local = tmp_path / f"{host}-{name}.kubeconfig"
                local.write_text(ssh(host, f"cat {K8S_DIR}/{name}.kubeconfig"))
                view = _kubectl_view(kubectl, local)
                (entry,) = view["clusters"]
                assert entry["cluster"]["server"] == f"https://{server}:6443"
                assert view["current-context"].endswith("@lab")
    view = _kubectl_view(kubectl, admin_files().kubeconfig)
    assert view["users"][0]["name"] == "admin"
    assert view["clusters"][0]["cluster"]["server"] == f"https://{first_cp}:6443"


def test_admin_certificate_gets_ok_from_every_apiserver(cluster):
    files = admin_files()
    assert files.key.stat().st_mode & 0o777 == 0o600
    for droplet in cluster.droplets:
        if "control_plane" in droplet.roles:
            assert healthz(droplet.address, files) == (200, "ok")


def test_the_admin_is_a_revocable_24h_group_and_system_masters_only_breaks_the_glass(cluster):
    files = admin_files()
    cert = load_certificate(files.cert.read_text())
    assert identity_of_cert(files.cert.read_text()).organization == ("galley:cluster-admins",)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(hours=24, minutes=1)
    kept = run_cli("galley", "admin", "credentials", INVENTORY)
    assert "ClusterRoleBinding galley:cluster-admins: up to date" in kept.stdout
    assert "break-glass" not in kept.stdout + kept.stderr  # no system:masters signed
    assert not list(files.directory.glob("break-glass.*")) or _masters(files)

    # Deleting the binding takes the admin's rights away; only break-glass puts it back.
    first_cp = next(d.address for d in cluster.droplets if "control_plane" in d.roles)
    api = KubeApi(f"https://{first_cp}:6443", files)
    api.request(
        "DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/galley:cluster-admins"
    )
    with pytest.raises(ApiError) as refused:
        api.nodes()
    assert refused.value.status == 403
    denied = run_cli("galley", "admin", "credentials", INVENTORY, check=False)
    assert denied.returncode == 3, denied.stdout + denied.stderr
    assert "run `galley admin credentials INVENTORY --break-glass` once" in denied.stderr
    for old in files.directory.glob("break-glass.*"):  # the session's first one, if any
        old.unlink()
    mended = run_cli("galley", "admin", "credentials", INVENTORY, "--break-glass")
    assert "galley: break-glass: signed " in mended.stderr
    assert "ClusterRoleBinding galley:cluster-admins: created" in mended.stdout
    assert _masters(files)

    def admin_reads_nodes() -> bool:
        try:
            return bool(api.nodes())
        except ApiError:
            return False

    assert wait_for(admin_reads_nodes, timeout=10)


def _masters(files) -> bool:
    """Whether the break-glass files beside ``files`` hold a system:masters certificate of at
    most an hour."""
    pem = (files.directory / "break-glass.crt").read_text()
    cert = load_certificate(pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return identity_of_cert(pem).organization == ("system:masters",) and lifetime <= timedelta(
        hours=1, minutes=1
    )


def test_certificates_match_the_identity_table(cluster, inventory):
    # Every directory the declarations put a certificate in, read in one fact call.
    folders = sorted(
        {
            str(Path(spec.cert_path).parent)
            for host in inventory
            for spec, _ in certificates_of(host)
        }
    )
    found = pyinfra_json(
        "fact", "galley.facts.Certificates", "paths=" + " ".join(f"{d}/*.crt" for d in folders)
    ).popitem()[1]
    for host in inventory:
        certs = found[host.name]
        for spec, want in certificates_of(host):
            cert = certs[spec.cert_path]
            have = (cert["cn"], cert["organization"], cert["dns_names"], cert["ip_addresses"])
            assert have == (
                want.cn,
                list(want.organization),
                list(want.dns_names),
                list(want.ip_addresses),
            ), (host.name, spec.cert_path)
    apiserver = found["lab-cp-1"]["/etc/kubernetes/pki/apiserver.crt"]
    assert "kubernetes.default.svc.cluster.local" in apiserver["dns_names"]
    assert "172.20.0.1" in apiserver["ip_addresses"]
    kubelet = found["lab-worker-1"]["/etc/kubernetes/pki/kubelet.crt"]
    assert (kubelet["cn"], kubelet["organization"]) == (
        "system:node:lab-worker-1",
        ["system:nodes"],
    )


def test_second_run_changes_nothing(cluster):
    code, results, output = run_deploy("cluster")
    assert code == 0, output
    assert changed(results) == {}


def test_apiservers_report_unhealthy_without_etcd_and_recover(cluster):
    files = admin_files()
    apiservers = [d.address for d in cluster.droplets if "control_plane" in d.roles]
    members = hosts_of(cluster, "etcd")
    try:
        on_each(members, CRASH_ETCD)
        assert wait_for(lambda: all(healthz(a, files) != (200, "ok") for a in apiservers), 45), [
            healthz(a, files) for a in apiservers
        ]
    finally:
        on_each(members, "systemctl start --no-block etcd")
    assert wait_for(lambda: all(healthz(a, files) == (200, "ok") for a in apiservers), 90)

    # Quorum is enough for the apiservers; later tests need every member back.
    def etcd_health() -> dict:
        return pyinfra_json("fact", "galley.facts.EtcdHealth", "--limit", "etcd").popitem()[1]

    assert wait_for(lambda: all(h["healthy"] for h in etcd_health().values()), 60), etcd_health()


BAD_INVENTORIES = {
    "overlapping networks": (
        "for _, data in etcd + control_plane + workers:\n    data['pod_cidr'] = '172.20.0.0/20'\n",
        "pod_cidr: 172.20.0.0/20 overlaps service_cidr 172.20.0.0/16",
    ),
    "service network too small": (
        "for _, data in etcd + control_plane + workers:\n"
        "    data['service_cidr'] = '172.30.0.0/32'\n",
        "service_cidr: 172.30.0.0/32 has no room for the first service IP",
    ),
    "empty control plane": (
        "control_plane = []\n",
        "inventory: control_plane: no hosts in group 'control_plane'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INVENTORIES))
def test_bad_inventories_are_refused_before_any_change(cluster, tmp_path, case):
    body, message = BAD_INVENTORIES[case]
    before = {
        name: ssh(name, f"sha256sum {K8S_DIR}/*.kubeconfig /etc/systemd/system/*.service")
        for name in hosts_of(cluster, "control_plane") + hosts_of(cluster, "workers")[:1]
    }
    code, _, output = run_deploy(
        "cluster", inventory=lab_inventory_variant(tmp_path, body), check=False
    )
    assert code != 0
    assert "the inventory is not valid, nothing was changed" in output
    assert message in output
    after = {
        name: ssh(name, f"sha256sum {K8S_DIR}/*.kubeconfig /etc/systemd/system/*.service")
        for name in before
    }
    assert after == before


def test_the_report_lists_every_component_and_flags_a_stopped_kubelet(cluster, inventory):
    result = run_cli("galley", "report", "inventories/lab.py", "--json", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = json.loads(result.stdout)["hosts"]
    for host in inventory:
        facts = hosts[host.name]
        for component in running_on(host):
            if component.unit:
                assert facts["units"][component.unit.name]["active"] == "active"
            if not component.artifacts:  # a Debian package's (api-proxy)
                continue
            release = component.artifacts[0].release
            version = host.data.get(component.artifacts[0].version_field)
            assert facts["versions"][release]["current"] == version, (host.name, release)
            if component.unit:
                assert facts["versions"][release]["running"] == version, (host.name, release)
    for name in hosts_of(cluster, "workers"):  # each Node, read through the API
        assert hosts[name]["node"]["ready"] == "True", hosts[name]["node"]

    def reported(text: str) -> bool:
        return text in run_cli("galley", "report", "inventories/lab.py", check=False).stdout

    ssh("lab-worker-1", "systemctl stop kubelet")
    try:
        stopped = run_cli("galley", "report", "inventories/lab.py", check=False)
        assert stopped.returncode == 1
        assert "lab-worker-1: units: kubelet: loaded, inactive" in stopped.stdout
        # Its heartbeat stops: flagged once its Lease (12 s in the lab) runs out, well before
        # the controller manager marks the Node NotReady.
        assert wait_for(lambda: reported("lab-worker-1: node: no heartbeat for"), 30)
        # And Prometheus alerts on it.
        assert wait_for(lambda: alerts(cluster, "KubeletDown") == {"lab-worker-1": "firing"}, 30)
        # Once the controller manager's grace period (20 s in the lab) is out, the Node is
        # NotReady: the report says so, and the leader's count of unhealthy Nodes fires
        # NodesNotReady.
        message = "Kubelet stopped posting node status."
        assert wait_for(lambda: reported(f"lab-worker-1: node: not Ready (Unknown: {message})"), 40)
        assert wait_for(lambda: alerts(cluster, "NodesNotReady") == {"": "firing"}, 30)
    finally:
        ssh("lab-worker-1", "systemctl start kubelet")
    assert wait_for(
        lambda: run_cli("galley", "report", "inventories/lab.py", check=False).returncode == 0, 60
    )
    assert wait_for(lambda: alerts(cluster, "NodesNotReady") == {}, 30)


def test_checksums_fetch_reads_the_mirror_and_refuses_a_tampered_file(cluster, tmp_path):
    catalogue = tmp_path / "checksums.json"
    fetch = (
        "galley", "checksums", "fetch", "kubernetes", B,
        "--arch", "amd64", "--inventory", "inventories/lab.py", "--catalogue", str(catalogue),
    )  # fmt: skip
    run_cli(*fetch)
    published = {
        a.name.replace("-", "_"): digest
        for a in ARTIFACTS
        if a.version == B and a.checksum_path.startswith("dl.k8s.io/")
        for digest in [(CACHE_DIR / "mirror" / a.checksum_path).read_text().split()[0]]
    }
    recorded = json.loads(catalogue.read_text())
    assert len(published) == 5
    assert {key: recorded[key][B]["amd64"] for key in recorded} == published

    (kubelet,) = [a for a in ARTIFACTS if a.name == "kubelet" and a.version == B]
    path = CACHE_DIR / "mirror" / kubelet.checksum_path
    original = path.read_text()
    try:
        path.write_text("0" * 64 + "\n")
        tampered = run_cli(*fetch, check=False)
    finally:
        path.write_text(original)
    assert tampered.returncode == 1
    assert f"kubelet {B} amd64: upstream publishes 0000" in tampered.stderr
    assert json.loads(catalogue.read_text()) == recorded


def _dry_plan(*arguments: str) -> dict[str, set[str]]:
    """What ``deploys/workers.py --dry`` says it would change: {operation: hosts}."""
    dry = json.loads(
        run_cli(
            "pyinfra", "inventories/lab.py", "deploys/workers.py", "--dry", "--json", *arguments
        ).stdout
    )
    return {
        op["name"]: set(op["hosts_with_change"]) for op in dry["plan"] if op["hosts_with_change"]
    }


def test_the_dry_plan_lists_exactly_the_changes_and_restarts_the_run_makes(cluster):
    """A release version and a template input change: --dry and the real run agree."""
    changes = (
        "--data",
        f"kubernetes_version={B}",
        "--data",
        "cluster_domain=lab.internal",
    )
    planned = _dry_plan(*changes)
    try:
        code, results, output = run_deploy("workers", *changes)
        assert code == 0, output
        assert changed(results) == planned
        restarts = {name.split(" | ")[-1] for name in planned if "Restart" in name}
        assert restarts == {
            f"Restart {unit} (only if its files changed)" for unit in ("kubelet", "kube-proxy")
        }
    finally:
        code, _, output = run_deploy("workers")
        assert code == 0, output


def test_a_config_edited_or_chmodded_by_hand_is_written_back_and_its_unit_restarted(cluster):
    """Each rendered file's digest, mode and owner are read once per host while preparing: an
    edit and a chmod on one host are still found and written back there only, the edited
    file's unit restarted (a chmod alone changes nothing a unit runs, and --dry does not list
    a restart for it either); the next run changes nothing."""
    config, unit_file = "/var/lib/kubelet/config.yaml", "/etc/systemd/system/kube-proxy.service"
    ssh("lab-worker-1", f"echo '# edited by hand' >> {config} && chmod 600 {unit_file}")
    planned = _dry_plan()
    code, results, output = run_deploy("workers")
    assert code == 0, output
    got = changed(results)
    assert got == planned, got
    for name in (
        f"workers | {config}",
        f"workers | {unit_file}",
        "workers | Restart kubelet (only if its files changed)",
    ):
        assert got.get(name) == {"lab-worker-1"}, got
    assert all(hosts == {"lab-worker-1"} for hosts in got.values()), got
    assert ssh("lab-worker-1", f"stat -c %a {unit_file}").strip() == "644"
    assert "edited by hand" not in ssh("lab-worker-1", f"cat {config}")
    code, results, output = run_deploy("workers")
    assert code == 0 and changed(results) == {}, output


def test_a_directory_a_link_and_a_unit_undone_by_hand_are_redone_on_that_host_only(cluster):
    """What a converged host has is read once while preparing, and only what differs gets an
    operation: a chmodded directory, a repointed binary link (its unit restarts) and a unit
    stopped and disabled (started again, not restarted) on one worker are all found there,
    with --dry listing exactly what the run then does; the next run changes nothing."""
    ssh(
        "lab-worker-2",
        "chmod 700 /var/lib/kube-proxy && ln -sfn /bin/true /usr/local/bin/kubelet && "
        "systemctl disable --now kube-proxy",
    )
    planned = _dry_plan()
    code, results, output = run_deploy("workers")
    assert code == 0, output
    got = changed(results)
    assert got == planned
    assert all(hosts == {"lab-worker-2"} for hosts in got.values()), got
    names = {name.removeprefix("workers | ") for name in got}
    assert {
        "directory /var/lib/kube-proxy",
        "kube-proxy enabled",
        "systemd daemon-reload",
        "kube-proxy started",
        "Restart kubelet (only if its files changed)",
    } <= names, names
    assert any(name.startswith("Install release | Activate kubelet ") for name in names), names
    assert "Restart kube-proxy (only if its files changed)" not in names
    assert ssh("lab-worker-2", "stat -c %a /var/lib/kube-proxy").strip() == "755"
    assert ssh("lab-worker-2", "readlink /usr/local/bin/kubelet").strip().endswith("/kubelet")
    assert ssh("lab-worker-2", "systemctl is-enabled kube-proxy").strip() == "enabled"
    code, results, output = run_deploy("workers")
    assert code == 0 and changed(results) == {}, output
