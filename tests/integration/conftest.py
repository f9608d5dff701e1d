"""Fixtures for integration tests: the real `galley` and `pyinfra` CLIs against lab droplets."""

from __future__ import annotations

import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import pytest
import requests
from pyinfra.api import Inventory

from galley.components.etcd import member_identity as etcd_member_identity
from galley.components.monitoring import PROMETHEUS_PORT
from galley.etcd.layout import MAINTENANCE_CLIENT, MAINTENANCE_STEM
from galley.host.tls import csr_command
from galley.lab import cgroups
from galley.lab.artifacts import ARTIFACTS
from galley.lab.droplets import ssh_command
from galley.lab.inventory import lab_groups, lab_overrides
from galley.lab.lifecycle import all_running
from galley.lab.state import CACHE_DIR, LAB_DIR, LabState
from galley.lab.system import KUBELET_SYSCTLS
from galley.lab.topology import BRIDGE
from galley.ops.admin import NEEDS_BREAK_GLASS, AdminFiles
from galley.ops.kubeapi import KubeApi, node_ready
from galley.vault.renewal import host_role

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = "inventories/lab.py"
MEMBER_CERT = "/etc/etcd/pki/member.crt"


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.lab)
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="lab tests need root (systemd-nspawn, mounts, a bridge)")
        for item in items:
            item.add_marker(skip)


def run_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None):
    """Run a console script of this virtualenv from the repository root."""
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"--- error lines\n{_error_lines(result.stdout + result.stderr)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _error_lines(output: str) -> str:
    """The lines of a long output that name an error, each with the line before it (pyinfra
    prints the failing operation's name there), so a failure far up the log still shows."""
    lines = output.splitlines()
    picked: list[str] = []
    for index, line in enumerate(lines):
        if "rror" in line and not line.lstrip().startswith("{"):
            picked.extend(lines[max(index - 1, 0) : index + 1])
    return "\n".join(picked[-60:])


def run_deploy(
    deploy_file: str, *args: str, inventory: str = "inventories/lab.py", check: bool = True
) -> tuple[int, dict | None, str]:
    """Run `pyinfra -y INVENTORY deploys/<file> --json`: exit code, JSON results, all output."""
    result = run_cli(
        "pyinfra", "-y", inventory, f"deploys/{deploy_file}.py", "--json", *args, check=check
    )
    try:
        results = json.loads(result.stdout)["results"]
    except (ValueError, KeyError):
        results = None
    return result.returncode, results, result.stdout + result.stderr


def changed(results: dict) -> dict[str, set[str]]:
    """Operation name -> hosts it changed, from `run_deploy`'s results."""
    return {op["name"]: set(op["success"]) for op in results["operations"] if op["success"]}


# What a deploy changes on a host whose firewall rules change (hosts joined or left a group).
FIREWALL_CHANGES = (
    "host-firewall | firewall rules /etc/galley/firewall/rules.nft",
    "host-firewall | firewall rules applied (a rollback armed)",
    "host-firewall | firewall rules kept (a new SSH connection still gets through)",
)


# A TCP connection attempt on a droplet: prints the address, the port and 0 (connected), 1
# (refused: the firewall let it through) or 124 (no answer in 2 s: dropped).
PROBE = 'timeout 2 bash -c "</dev/tcp/{address}/{port}" 2>/dev/null; echo {address} {port} $?'


def reaches(source: str, address: str, port: int) -> bool:
    """Whether droplet ``source`` can open a TCP connection to ``address:port`` (`PROBE`)."""
    return ssh(source, PROBE.format(address=address, port=port)).split()[-1] in ("0", "1")


def lab_inventory_variant(directory: Path, body: str) -> str:
    """An inventory file: the lab's groups as `etcd`, `control_plane`, `workers`, `monitoring`,
    then ``body``
    (Python that changes them); returns its path."""
    path = directory / "inventory.py"
    path.write_text(
        "from galley.lab.inventory import lab_groups, lab_overrides\n"
        "from galley.lab.state import LabState\n"
        "_state = LabState.load()\n"
        "_groups = lab_groups(_state, lab_overrides(_state))\n"
        "etcd = _groups['etcd']\n"
        "control_plane = _groups['control_plane']\n"
        "workers = _groups['workers']\n"
        "monitoring = _groups['monitoring']\n" + body
    )
    return str(path)


def lab_vault(state: LabState) -> hvac.Client:
    """A root client of the lab's OpenBao, its token read from the file the state names."""
    token = Path(state.vault_token_file).read_text().strip()
    return hvac.Client(url=state.vault_addr, token=token, verify=state.vault_ca_cert)


def pyinfra_json(*args: str) -> dict:
    """Run `pyinfra inventories/lab.py ... --json` and return its parsed output."""
    return json.loads(run_cli("pyinfra", "inventories/lab.py", *args, "--json").stdout)


def bootstrap_vault(inventory: str = INVENTORY) -> None:
    """`galley vault bootstrap` for ``inventory``'s hosts, as an operator runs it once a
    droplet was added: each host's own roles, each job's policy its hosts'."""
    run_cli("galley", "vault", "bootstrap", "--cluster", "lab", "--inventory", inventory)


def lab_add(role: str, count: int = 1) -> None:
    """``count`` droplets of ``role`` added to the lab, with their roles in Vault."""
    for _ in range(count):
        run_cli("galley", "lab", "add", "--role", role)
    bootstrap_vault()


def _live_processes(name: str) -> list[int]:
    """PIDs of running (not zombie) processes called ``name``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
        except (OSError, IndexError):
            continue
        if comm == name and fields[1].split()[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _lab_vault_processes() -> list[int]:
    """PIDs of running ``bao`` processes serving from the lab directory (the unit tests' own
    OpenBao, in a tmp directory, does not count)."""
    return [
        pid
        for pid in _live_processes("bao")
        if str(LAB_DIR) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    ]


def _lab_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as mounts:
        return [line.split()[4] for line in mounts if str(LAB_DIR) in line.split()[4]]


def _bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0


def kubelet_sysctls() -> dict[str, str]:
    """The host's kernel settings the lab's kubelets need (the lab sets and puts them back)."""
    return {key: (Path("/proc/sys") / key).read_text() for key in KUBELET_SYSCTLS}


def lab_leftovers() -> list[str]:
    """What of a lab is left on this machine: its state, processes, cgroups, Vault data,
    mounts and bridge ([] when nothing is)."""
    left = {
        "the lab's state": LabState.load() is not None,
        "systemd-nspawn": bool(_live_processes("systemd-nspawn")),
        "apt-cacher-ng": bool(_live_processes("apt-cacher-ng")),
        "docker-registry": bool(_live_processes("docker-registry")),
        "cgroups": any(directory.exists() for directory in cgroups.lab_dirs()),
        "OpenBao": bool(_lab_vault_processes()),
        "OpenBao's data": (LAB_DIR / "openbao").exists(),
        "mounts": bool(_lab_mounts()),
        "the bridge": _bridge_exists(),
    }
    return [what for what, found in left.items() if found]


def _lab_running() -> bool:
    state = LabState.load()
    return state is not None and all_running(state)


@pytest.fixture(scope="session", autouse=True)
def lab_down_at_the_end() -> Iterator[None]:
    """A session that found no lab running takes down the one it brought up (test_01_lab's):
    `galley lab down` removes every droplet, service and the bridge, leaves nothing behind and
    puts the kubelet's kernel settings back as they were. A lab up before stays up."""
    was_up, sysctls = _lab_running(), kubelet_sysctls()
    yield
    if was_up or LabState.load() is None:
        return
    down = run_cli("galley", "lab", "down")
    assert re.search(r"removed \d+ droplets, 4 services and bridge br-galley", down.stdout)
    assert lab_leftovers() == []
    assert kubelet_sysctls() == sysctls
    assert "no lab is up" in run_cli("galley", "lab", "down").stdout


@pytest.fixture(scope="session")
def lab() -> LabState:
    """The running default lab (test_01_lab's, or brought up now) for the session."""
    run_cli("galley", "lab", "up")
    state = LabState.load()
    assert state is not None
    return state


@pytest.fixture(scope="session")
def cluster(lab) -> LabState:
    """The whole cluster deployed on the lab once for the session (`galley vault bootstrap`,
    `deploys/cluster.py`, `galley admin credentials`): every module shares it, and a module
    that changes it puts back what it changed."""
    bootstrap_vault()
    code, _, output = run_deploy("cluster")
    assert code == 0, output
    admin = run_cli("galley", "admin", "credentials", INVENTORY, check=False)
    if admin.returncode == NEEDS_BREAK_GLASS:  # a new cluster: the admins' binding
        run_cli("galley", "admin", "credentials", INVENTORY, "--break-glass")
    else:
        assert admin.returncode == 0, admin.stdout + admin.stderr
    return lab


@pytest.fixture(scope="session")
def vault_client(cluster) -> hvac.Client:
    """A root client of the lab's OpenBao (the cluster bootstrapped in it)."""
    return lab_vault(cluster)


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory) -> Path:
    """The lab's kubectl (the mirror's, Debian's build), runnable from a temporary copy."""
    (artifact,) = [a for a in ARTIFACTS if a.name == "kubectl"]
    copy = tmp_path_factory.mktemp("kubectl") / "kubectl"
    copy.write_bytes((CACHE_DIR / "mirror" / artifact.upstream_path).read_bytes())
    copy.chmod(0o755)
    return copy


@pytest.fixture(scope="session")
def inventory(cluster) -> Inventory:
    """The lab's inventory with group_data/all.py, as the deploy sees it (no connection)."""
    all_data = {
        key: value
        for key, value in runpy.run_path(str(REPO / "group_data" / "all.py")).items()
        if not key.startswith("_")
    }
    groups = lab_groups(cluster, lab_overrides(cluster))
    hosts = {name: data for members in groups.values() for name, data in members}
    return Inventory(
        (list(hosts.items()), all_data),
        **{group: ([name for name, _ in members], {}) for group, members in groups.items()},
    )


def ssh_run(name: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``command`` on droplet ``name`` as root, with the ssh command `galley lab ssh`
    runs (without its Python start: the tests look at droplets hundreds of times)."""
    state = LabState.load()
    droplet = state.droplet(name)
    return subprocess.run(
        ssh_command(droplet.address, state.ssh_key, state.known_hosts, command),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ssh(name: str, command: str, check: bool = True) -> str:
    """Run ``command`` on droplet ``name`` as root; its stdout."""
    result = ssh_run(name, command)
    if check and result.returncode != 0:
        raise AssertionError(
            f"on {name}: {command[:200]} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result.stdout


def on_each(names: list[str], command: str) -> list[str]:
    """``command`` on every droplet of ``names`` at once; their stdouts in order."""
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda name: ssh(name, command), names))


# etcd down as a crash leaves it, and at once: a clean stop waits up to 7 s for its clients'
# watch streams (etcd's request timeout). The kill's restart is cancelled by the stop.
CRASH_ETCD = "systemctl kill --signal=SIGKILL etcd; systemctl stop etcd"


GALLEY_UNITS = (
    "etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy flanneld"
)


def unit_starts(*excluding: str) -> dict[str, str]:
    """When each galley unit on each running droplet (but ``excluding``) last started: what a
    change restarts."""
    return {
        d.name: ssh(d.name, f"systemctl show -p ActiveEnterTimestamp {GALLEY_UNITS}")
        for d in LabState.load().droplets
        if not d.killed and d.name not in excluding
    }


def hosts_of(lab: LabState, group: str) -> list[str]:
    """The droplets of an inventory group, in order."""
    return [d.name for d in lab.droplets if group in d.roles]


def prometheus(lab: LabState, path: str) -> dict:
    """GET ``/api/v1/<path>`` of the lab's Prometheus (this machine is its operator)."""
    (address,) = [d.address for d in lab.droplets if "monitoring" in d.roles]
    answer = requests.get(f"http://{address}:{PROMETHEUS_PORT}/api/v1/{path}", timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]


def scrape_targets(lab: LabState) -> dict[tuple[str, str], str]:
    """Prometheus' targets: (job, host) -> health ("up", "down", "unknown")."""
    return {
        (t["labels"]["job"], t["labels"].get("host", "")): t["health"]
        for t in prometheus(lab, "targets?state=active")["activeTargets"]
    }


def alerts(lab: LabState, name: str) -> dict[str, str]:
    """The hosts alert ``name`` is on in Prometheus, with its state ("pending", "firing")."""
    return {
        alert["labels"].get("host", ""): alert["state"]
        for alert in prometheus(lab, "alerts")["alerts"]
        if alert["labels"]["alertname"] == name
    }


def admin_files() -> AdminFiles:
    """The operator's admin credential of the lab's cluster."""
    return AdminFiles(Path("~/.config/galley/lab").expanduser())


def healthz(address: str, files: AdminFiles) -> tuple[int, str]:
    """An apiserver's ``/healthz`` with the admin credential: status code and text (0 and the
    error when it does not answer)."""
    try:
        answer = requests.get(
            f"https://{address}:6443/healthz",
            cert=(str(files.cert), str(files.key)),
            verify=str(files.ca),
            timeout=5,
        )
    except requests.RequestException as exc:
        return 0, str(exc)
    return answer.status_code, answer.text


def wait_for(predicate, timeout: float, interval: float = 1.0) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def steadily_ready(api: KubeApi, workers: list[str], seconds: float = 3, timeout: float = 60):
    """Whether every worker's Node is Ready at every look for ``seconds`` in a row, within
    ``timeout`` (a kubelet just restarted may post one more NotReady before it settles)."""
    deadline, since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        nodes = {n["metadata"]["name"]: n for n in api.nodes()}
        if all(name in nodes and node_ready(nodes[name]) for name in workers):
            since = since or time.monotonic()
            if time.monotonic() - since >= seconds:
                return True
        else:
            since = None
        time.sleep(0.5)
    return False


def kill_once_journal_says_done(args: list[str], journal: Path, key: str, timeout: float) -> dict:
    """Run ``galley ARGS``; SIGKILL it (the operator's session is lost) once the journal's
    record ``key`` is done, or at ``timeout``; the journal as it was left."""
    process = subprocess.Popen(
        [str(BIN / "galley"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists():
                nodes = json.loads(journal.read_text()).get("nodes", {})
                if nodes.get(key, {}).get("state") == "done":
                    break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    return json.loads(journal.read_text())


@pytest.fixture(scope="session")
def client_cert(cluster, vault_client, tmp_path_factory) -> tuple[str, str, str]:
    """An etcd client certificate from Vault (key made here, as an operator's would be)."""
    return issue_client_cert(vault_client, tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="session")
def etcdctl(etcd_release) -> Path:
    """The lab's etcdctl, run here."""
    return etcd_release / "etcdctl"


def issue_client_cert(vault_client: hvac.Client, directory: Path) -> tuple[str, str, str]:
    """A new etcd client certificate (the maintenance identity, etcd's root) in
    ``directory``: its certificate, key and CA files."""
    issued = vault_client.secrets.pki.generate_certificate(
        host_role("lab-etcd-1", MAINTENANCE_STEM),
        MAINTENANCE_CLIENT,
        extra_params={"exclude_cn_from_sans": True},
        mount_point="lab/pki/etcd",
    )["data"]
    paths = [directory / name for name in ("client.crt", "client.key", "ca.crt")]
    for path, pem in zip(
        paths, (issued["certificate"], issued["private_key"], issued["issuing_ca"]), strict=True
    ):
        path.write_text(pem + "\n")
    return tuple(map(str, paths))


def endpoints(lab) -> list[str]:
    return [f"https://{d.address}:2379" for d in lab.droplets if "etcd" in d.roles]


def etcd_call(
    etcdctl: Path, url: str, cert: tuple[str, str, str], *args: str, timeout: str = "2s"
) -> subprocess.CompletedProcess:
    """etcdctl ``args`` against one member with the client identity ``cert`` (certificate,
    key, CA): over gRPC, as etcd's clients talk (its HTTP gateway refuses to act on a
    certificate's name once authorisation is on)."""
    flags = [f"--endpoints={url}", f"--dial-timeout={timeout}", f"--command-timeout={timeout}"]
    tls = [f"--cert={cert[0]}", f"--key={cert[1]}", f"--cacert={cert[2]}"]
    return subprocess.run(
        [str(etcdctl), *flags, *tls, *args], capture_output=True, text=True, check=False
    )


def sign_verbatim(vault, mount: str, csr: str, ttl: str | None = None) -> str:
    """A server and client certificate of ``mount``'s CA carrying exactly the CSR's names
    (root only: no host's role would sign names its host does not hold)."""
    data = {"csr": csr, "ext_key_usage": "ServerAuth,ClientAuth", "format": "pem"}
    answer = vault.write_data(f"{mount}/sign-verbatim", data=data | ({"ttl": ttl} if ttl else {}))
    return answer["data"]["certificate"]


def install_member_cert(vault, name: str, address: str, ttl: str) -> None:
    """Sign a certificate for ``name`` with the given SAN address and TTL; install it."""
    csr = ssh(name, csr_command("/etc/etcd/pki/member.key", etcd_member_identity(name, address)))
    signed = sign_verbatim(vault, "lab/pki/etcd", csr, ttl)
    ssh(name, f"cat > {MEMBER_CERT} <<'EOF'\n{signed}\nEOF")
