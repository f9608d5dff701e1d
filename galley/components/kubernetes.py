"""What the Kubernetes components share: host paths, identities, the API's address, the
node and serving roles, the raw-binary download of dl.k8s.io, and kubeconfigs.

Identities follow what Kubernetes expects: the certificate CN is the user name and O the
groups (the Vault role sets O, so each identity has its own role).
"""

from __future__ import annotations

import ipaddress

from pyinfra import inventory
from pyinfra.api import Inventory
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta

from galley.components.engine import render
from galley.components.model import Artifact, Cert, Config
from galley.vault.pki import Identity, RoleSpec

K8S_DIR = "/etc/kubernetes"
PKI_DIR = f"{K8S_DIR}/pki"
CA_PATH = f"{PKI_DIR}/ca.crt"
ETCD_CA_PATH = f"{PKI_DIR}/etcd-ca.crt"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

# A node's client identity (kubelet, and flannel in Kubernetes API mode).
NODE_ROLE = RoleSpec("kubelet", "k8s", enforce_hostnames=False, organization=("system:nodes",))


def serving_role(name: str) -> RoleSpec:
    """A kind of serving certificate of host-local endpoints (CN and SANs the host name,
    localhost, its IPs)."""
    return RoleSpec(name, "k8s", server=True, client=False)


# The controller managers' and schedulers' serving certificates; the kubelets'.
CONTROL_PLANE_SERVING_ROLE = serving_role("control-plane-serving")
NODE_SERVING_ROLE = serving_role("kubelet-serving")


def kubernetes_binary(binary: str) -> Artifact:
    """A raw Kubernetes server binary of ``kubernetes_version`` from dl.k8s.io; upstream
    publishes ``<binary>.sha256`` next to it."""
    url = f"{{dl_k8s}}/release/v{{version}}/bin/linux/{{arch}}/{binary}"
    return Artifact(
        key=binary.replace("-", "_"),
        release=binary,
        url=url,
        checksum_url=f"{url}.sha256",
        binaries=(binary,),
        version_key="kubernetes_version",
        archive=False,
    )


def k8s_cert(
    stem: str,
    role: RoleSpec,
    identity,
    directory: str = PKI_DIR,
    when=lambda host: True,
    reloaded: bool = False,
) -> Cert:
    """A certificate of the cluster's Kubernetes CA (mount ``k8s``) below ``directory``."""
    return Cert(stem, directory, "k8s", role, identity, CA_PATH, when=when, reloaded=reloaded)


def node_name(host: Host) -> str:
    """The name a host registers with as a Kubernetes node (its inventory name)."""
    return host.name


def node_identity(host: Host) -> Identity:
    """A node's client identity (the kubelet's)."""
    return Identity(f"system:node:{node_name(host)}", organization=("system:nodes",))


def local_serving_identity(host: Host) -> Identity:
    """Serving identity of an endpoint on a host: its name, localhost and its IPs."""
    return Identity(host.name, (host.name, "localhost"), (host.data.private_ip, "127.0.0.1"))


def first_service_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first address of the service network (the `kubernetes` service's ClusterIP)."""
    network = ipaddress.ip_network(service_cidr)
    if network.num_addresses < 2:
        raise ValueError(f"{network} has no room for the first service IP")
    return network.network_address + 1


def cluster_dns_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The cluster DNS service's IP: by convention the tenth address of the service network."""
    return first_service_ip(service_cidr) + 9


def control_plane_hosts(hosts: Inventory | None = None) -> list[Host]:
    """The hosts of the ``control_plane`` group of ``hosts`` (default: the run's inventory)."""
    return list((inventory if hosts is None else hosts).get_group("control_plane", []))


def etcd_servers(hosts: Inventory) -> str:
    """The etcd members' client URLs, comma-separated (each member's own port)."""
    return ",".join(
        f"https://{member.data.private_ip}:{member.data.etcd_client_port}"
        for member in hosts.get_group("etcd", [])
    )


def needs_proxy(host: Host) -> bool:
    """Whether ``host`` reaches the API through a local proxy (`galley.components.api_proxy`):
    no ``api_endpoint`` is set and no apiserver runs on it (a control-plane host dials its
    own)."""
    return not host.data.get("api_endpoint") and "control_plane" not in host.groups


def api_url(host: Host, local: bool = False) -> str:
    """The API's URL for a host's own clients: ``api_endpoint`` when set (e.g. a load
    balancer's name or IP) and not ``local``; ``127.0.0.1`` on a host that `needs_proxy`;
    else its own apiserver, at the private address it listens on."""
    data = host.data
    endpoint = data.get("api_endpoint")
    if endpoint and not local:
        return _https(str(endpoint), data.api_port)
    return _https("127.0.0.1" if needs_proxy(host) else data.private_ip, data.api_port)


def apiserver_urls(hosts: Inventory) -> list[str]:
    """Each control-plane host's apiserver, in inventory order."""
    servers = control_plane_hosts(hosts)
    if not servers:
        raise ValueError("no hosts in group 'control_plane' to serve the Kubernetes API")
    return [_https(str(one.data.private_ip), one.data.api_port) for one in servers]


def operator_api_urls(hosts: Inventory) -> list[str]:
    """Where a client off the cluster (the operator's) reaches the API: ``api_endpoint`` when
    set, else each apiserver (`apiserver_urls`)."""
    urls = apiserver_urls(hosts)
    data = control_plane_hosts(hosts)[0].data
    endpoint = data.get("api_endpoint")
    return [_https(str(endpoint), data.api_port)] if endpoint else urls


def _https(address: str, port: int) -> str:
    return f"https://[{address}]:{port}" if ":" in address else f"https://{address}:{port}"


def is_ip(value: str) -> bool:
    """Whether ``value`` is an IP address (v4 or v6)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def kubeconfig(host: Host, path: str, server: str, cert: Cert) -> OperationMeta:
    """Write a kubeconfig at ``path`` that logs in to ``server`` with ``cert`` (0600, root)."""
    return render(
        Config(path, "kubernetes/kubeconfig.j2", mode="600"),
        name=f"kubeconfig {path}",
        cluster_name=host.data.cluster_name,
        server=server,
        ca_path=CA_PATH,
        user_name=cert.identity(host).cn,
        cert_path=cert.cert_path,
        key_path=cert.key_path,
    )
