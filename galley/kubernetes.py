"""What the Kubernetes deploys share: host paths, the identity table, API addresses, binaries,
kubeconfigs and Vault-signed certificates.

Identities follow what Kubernetes expects: the certificate CN is the user name and O the
groups. ``certificates_of(host)`` is the table of every certificate a host holds (role, CN, O,
SANs, paths); the deploys install exactly these and the tests check the hosts against it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import hvac
from pyinfra import host as current_host
from pyinfra import inventory
from pyinfra.api import Inventory
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, python, systemd

from galley.pki import API_SERVICE_NAMES, Identity, mount_path
from galley.release import Release, install_release
from galley.restarts import restart_when_pending
from galley.tls import HostCert, host_certificates
from galley.validate import first_service_ip

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
K8S_DIR = "/etc/kubernetes"
PKI_DIR = f"{K8S_DIR}/pki"
CA_PATH = f"{PKI_DIR}/ca.crt"
ETCD_CA_PATH = f"{PKI_DIR}/etcd-ca.crt"
FLANNEL_DIR = "/etc/kube-flannel"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"


@dataclass(frozen=True)
class CertSpec:
    """One certificate on a host: the Vault role that signs it and the identity it carries."""

    name: str  # file stem: <directory>/<name>.key and .crt
    role: str
    mount: str  # "k8s" or "etcd"
    identity: Identity
    directory: str = PKI_DIR

    @property
    def key_path(self) -> str:
        """Where the private key lives (made on the host, never leaves it)."""
        return f"{self.directory}/{self.name}.key"

    @property
    def cert_path(self) -> str:
        """Where the signed certificate lives."""
        return f"{self.directory}/{self.name}.crt"

    @property
    def ca_path(self) -> str:
        """The CA bundle of the mount that signs it."""
        return ETCD_CA_PATH if self.mount == "etcd" else CA_PATH


def node_name(host: Host) -> str:
    """The name a host registers with as a Kubernetes node (its inventory name)."""
    return host.name


def control_plane_hosts() -> list[Host]:
    """The hosts of the ``control_plane`` group, in inventory order."""
    return list(inventory.get_group("control_plane", []))


def etcd_servers(hosts: Inventory) -> str:
    """The etcd members' client URLs, comma-separated (each member's own port)."""
    return ",".join(
        f"https://{member.data.private_ip}:{member.data.etcd_client_port}"
        for member in hosts.get_group("etcd", [])
    )


def api_address(data) -> str:
    """The address clients dial for the API: ``api_endpoint`` (e.g. a load balancer's name or
    IP), else the first control-plane host's private IP."""
    endpoint = data.get("api_endpoint")
    if endpoint:
        return str(endpoint)
    hosts = control_plane_hosts()
    if not hosts:
        raise ValueError("no hosts in group 'control_plane' to serve the Kubernetes API")
    return str(hosts[0].data.private_ip)


def api_url(data, local: bool = False) -> str:
    """The API's URL: through `api_address`, or the apiserver on this host when ``local``."""
    address = "127.0.0.1" if local else api_address(data)
    if ":" in address:
        address = f"[{address}]"
    return f"https://{address}:{data.api_port}"


def cluster_dns_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The cluster DNS service's IP: by convention the tenth address of the service network."""
    return first_service_ip(service_cidr) + 9


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def apiserver_identity(host: Host) -> Identity:
    """The apiserver's serving identity: in-cluster names, host name, endpoint, first service IP."""
    data = host.data
    endpoint = str(data.get("api_endpoint") or "")
    dns = [*API_SERVICE_NAMES, f"kubernetes.default.svc.{data.cluster_domain}", host.name]
    ips = [str(first_service_ip(data.service_cidr)), data.private_ip, "127.0.0.1"]
    if endpoint:
        (ips if _is_ip(endpoint) else dns).append(endpoint)
    return Identity("kube-apiserver", (*dns, "localhost"), tuple(ips))


def node_identity(host: Host) -> Identity:
    """A node's client identity (kubelet; flannel in Kubernetes API mode)."""
    return Identity(f"system:node:{node_name(host)}", organization=("system:nodes",))


def local_serving_identity(host: Host) -> Identity:
    """Serving identity of an endpoint on a host: its name, localhost and its IPs."""
    return Identity(host.name, (host.name, "localhost"), (host.data.private_ip, "127.0.0.1"))


def control_plane_certs(host: Host) -> list[CertSpec]:
    """The certificates of a control-plane host."""
    return [
        CertSpec("apiserver", "kube-apiserver", "k8s", apiserver_identity(host)),
        CertSpec(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "k8s",
            Identity("kube-apiserver-kubelet-client", organization=("system:masters",)),
        ),
        CertSpec(
            "apiserver-etcd-client", "etcd-client", "etcd", Identity("kube-apiserver-etcd-client")
        ),
        CertSpec(
            "kube-controller-manager",
            "kube-controller-manager",
            "k8s",
            Identity("system:kube-controller-manager"),
        ),
        CertSpec("kube-scheduler", "kube-scheduler", "k8s", Identity("system:kube-scheduler")),
        *(
            CertSpec(f"{component}-serving", "serving", "k8s", local_serving_identity(host))
            for component in ("kube-controller-manager", "kube-scheduler")
        ),
    ]


def worker_certs(host: Host) -> list[CertSpec]:
    """The certificates of a worker: kubelet client and serving, kube-proxy."""
    return [
        CertSpec("kubelet", "kubelet", "k8s", node_identity(host)),
        CertSpec(
            "kubelet-serving",
            "serving",
            "k8s",
            Identity(node_name(host), (node_name(host),), (host.data.private_ip,)),
        ),
        CertSpec(
            "kube-proxy",
            "kube-proxy",
            "k8s",
            Identity("system:kube-proxy", organization=("system:node-proxier",)),
        ),
    ]


def flannel_certs(host: Host) -> list[CertSpec]:
    """flannel's client certificate: the node's identity, or an etcd client in etcd mode."""
    if host.data.flannel_mode == "etcd":
        return [
            CertSpec(
                "etcd-client",
                "etcd-client",
                "etcd",
                Identity("flannel-etcd-client"),
                directory=f"{FLANNEL_DIR}/pki",
            )
        ]
    return [CertSpec("flannel", "kubelet", "k8s", node_identity(host))]


def certificates_of(host: Host) -> list[CertSpec]:
    """Every Kubernetes-side certificate galley puts on ``host`` (the identity table)."""
    specs = []
    if "control_plane" in host.groups:
        specs += control_plane_certs(host)
    if "workers" in host.groups:
        specs += worker_certs(host) + flannel_certs(host)
    return specs


def install_certificates(
    host: Host, specs: list[CertSpec], vault: Callable[[], hvac.Client]
) -> list[OperationMeta]:
    """Keep each certificate (key made on the host) signed by Vault; returns the operations."""
    cluster = host.data.cluster_name
    return host_certificates(
        name="Certificates",
        certs=[
            HostCert(
                key_path=spec.key_path,
                cert_path=spec.cert_path,
                ca_path=spec.ca_path,
                identity=spec.identity,
                mount=mount_path(cluster, spec.mount),
                role=spec.role,
                ttl=host.data.kubernetes_cert_ttl,
            )
            for spec in specs
        ],
        vault=vault,
    )


def data_key(binary: str) -> str:
    """The group-data prefix of a binary: ``kube-apiserver`` -> ``kube_apiserver``."""
    return binary.replace("-", "_")


def install_kubernetes_binary(data, binary: str) -> Release:
    """Install a raw Kubernetes server binary of ``kubernetes_version`` from dl.k8s.io."""
    version, arch = data.kubernetes_version, data.arch
    url = f"{data.dl_k8s_base_url.rstrip('/')}/release/v{version}/bin/linux/{arch}/{binary}"
    checksums = data.get(f"{data_key(binary)}_checksums")
    return install_release(binary, version, url, checksums[version][arch], [binary], archive=False)


def kubeconfig(path: str, cluster: str, server: str, spec: CertSpec) -> OperationMeta:
    """Write a kubeconfig at ``path`` that logs in with ``spec``'s certificate (0600, root)."""
    return files.template(
        name=f"kubeconfig {path}",
        src=str(TEMPLATES / "kubeconfig.j2"),
        dest=path,
        user="root",
        group="root",
        mode="600",
        cluster_name=cluster,
        server=server,
        ca_path=CA_PATH,
        user_name=spec.identity.cn,
        cert_path=spec.cert_path,
        key_path=spec.key_path,
    )


def unit_path(unit: str) -> str:
    """Where galley writes the systemd unit of ``unit``."""
    return f"/etc/systemd/system/{unit}.service"


def template(src: str, dest: str, mode: str = "644", **variables) -> OperationMeta:
    """Render ``templates/<src>`` to ``dest`` (owned by root)."""
    return files.template(
        name=dest,
        src=str(TEMPLATES / src),
        dest=dest,
        user="root",
        group="root",
        mode=mode,
        **variables,
    )


def run_units(
    units: Mapping[str, OperationMeta],
    watched: Mapping[str, Sequence[str]],
    changes: Sequence[OperationMeta],
    wait: Mapping[str, dict] | None = None,
    restart: Mapping[str, dict] | None = None,
) -> None:
    """Reload systemd if a unit file changed; start and enable each unit, in order.

    A unit restarts (`restart_when_pending`) when its ``watched`` files are newer than its
    start; ``restart[unit]`` passes options (e.g. a health-gated function, serial). After a
    first start, ``wait[unit]`` (``python.call`` arguments) waits for it to be healthy.
    """
    systemd.daemon_reload(
        name="systemd daemon-reload",
        _if=lambda: any(unit.did_change() for unit in units.values()),
    )
    for unit in current_host.loop(units):
        started = systemd.service(
            name=f"{unit} started and enabled", service=unit, running=True, enabled=True
        )
        if wait and unit in wait:
            python.call(name=f"Wait for {unit} to be healthy", _if=started.did_change, **wait[unit])
        restart_when_pending(
            unit, watched[unit], changes, started, **((restart or {}).get(unit, {}))
        )
