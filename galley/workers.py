"""Workers: containerd (with runc and the CNI plugins), kubelet and kube-proxy as systemd units.

The kubelet registers under the host's inventory name (``--hostname-override``), which is
also the CN of its client certificate (``system:node:<name>``, O ``system:nodes``) so the
Node authorizer lets it manage exactly its own Node object. Its serving certificate is signed
by the cluster CA too, so the apiservers verify kubelets (``--kubelet-certificate-authority``).
"""

from __future__ import annotations

from collections.abc import Callable

import hvac
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from galley.kubernetes import (
    CA_PATH,
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    K8S_DIR,
    PKI_DIR,
    api_url,
    cluster_dns_ip,
    install_certificates,
    install_kubernetes_binary,
    kubeconfig,
    node_name,
    run_units,
    template,
    unit_path,
    worker_certs,
)
from galley.release import Release, active_paths, install_release

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBELET_KUBECONFIG = f"{K8S_DIR}/kubelet.kubeconfig"
KUBE_PROXY_CONFIG = "/var/lib/kube-proxy/config.yaml"
KUBE_PROXY_KUBECONFIG = f"{K8S_DIR}/kube-proxy.kubeconfig"
UNITS = ("containerd", "kubelet", "kube-proxy")
KEY_PAIR = ("crt", "key")
DIRECTORIES = (
    (K8S_DIR, "755"),
    (PKI_DIR, "700"),
    ("/etc/containerd", "755"),
    (CNI_CONF_DIR, "755"),
    (CNI_BIN_DIR, "755"),
    ("/var/lib/kubelet", "700"),
    ("/var/lib/kube-proxy", "755"),
)


def github_release_url(data, project: str, version: str, filename: str) -> str:
    """A GitHub release download below ``github_base_url``."""
    return f"{data.github_base_url.rstrip('/')}/{project}/releases/download/v{version}/{filename}"


def _install_runtime(data) -> dict[str, Release]:
    """containerd, runc and the CNI plugins, each verified before it is activated."""
    arch = data.arch
    versions = {name: data.get(f"{name}_version") for name in ("containerd", "runc", "cni_plugins")}

    def sha256(name: str) -> str:
        return data.get(f"{name}_checksums")[versions[name]][arch]

    containerd = versions["containerd"]
    runc = versions["runc"]
    cni = versions["cni_plugins"]
    return {
        "containerd": install_release(
            "containerd",
            containerd,
            github_release_url(
                data,
                "containerd/containerd",
                containerd,
                f"containerd-{containerd}-linux-{arch}.tar.gz",
            ),
            sha256("containerd"),
            list(CONTAINERD_BINARIES),
        ),
        "runc": install_release(
            "runc",
            runc,
            github_release_url(data, "opencontainers/runc", runc, f"runc.{arch}"),
            sha256("runc"),
            ["runc"],
            archive=False,
        ),
        "cni-plugins": install_release(
            "cni-plugins",
            cni,
            github_release_url(
                data,
                "containernetworking/plugins",
                cni,
                f"cni-plugins-linux-{arch}-v{cni}.tgz",
            ),
            sha256("cni_plugins"),
            list(CNI_PLUGINS),
            bin_dir=CNI_BIN_DIR,
        ),
    }


@deploy("Kubernetes worker")
def worker(vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start this worker's container runtime, kubelet and kube-proxy."""
    data = host.data
    cluster = data.cluster_name
    for path, mode in host.loop(DIRECTORIES):
        files.directory(name=f"directory {path}", path=path, user="root", group="root", mode=mode)

    releases = _install_runtime(data)
    for binary in host.loop(("kubelet", "kube-proxy")):
        releases[binary] = install_kubernetes_binary(data, binary)
    specs = {spec.name: spec for spec in worker_certs(host)}
    certs = install_certificates(host, list(specs.values()), vault)

    template_vars = {
        "cluster_name": cluster,
        "cluster_domain": data.cluster_domain,
        "cluster_dns": str(cluster_dns_ip(data.service_cidr)),
        "node_name": node_name(host),
        "private_ip": data.private_ip,
        "pod_cidr": data.pod_cidr,
        "pki_dir": PKI_DIR,
        "ca_path": CA_PATH,
        "containerd_config": CONTAINERD_CONFIG,
        "sandbox_image": data.sandbox_image,
        "cni_bin_dir": CNI_BIN_DIR,
        "cni_conf_dir": CNI_CONF_DIR,
        "kubelet_config": KUBELET_CONFIG,
        "kube_proxy_config": KUBE_PROXY_CONFIG,
    }
    server = api_url(data)
    configs = [
        template("containerd-config.toml.j2", CONTAINERD_CONFIG, **template_vars),
        kubeconfig(KUBELET_KUBECONFIG, cluster, server, specs["kubelet"]),
        template(
            "kubelet-config.yaml.j2", KUBELET_CONFIG, kubeconfig=KUBELET_KUBECONFIG, **template_vars
        ),
        kubeconfig(KUBE_PROXY_KUBECONFIG, cluster, server, specs["kube-proxy"]),
        template(
            "kube-proxy-config.yaml.j2",
            KUBE_PROXY_CONFIG,
            kubeconfig=KUBE_PROXY_KUBECONFIG,
            **template_vars,
        ),
    ]
    units = {
        unit: template(
            f"{unit}.service.j2", unit_path(unit), kubeconfig=KUBELET_KUBECONFIG, **template_vars
        )
        for unit in host.loop(UNITS)
    }
    changes: list[OperationMeta] = [
        *certs,
        *configs,
        *units.values(),
        *(release.activation for release in releases.values()),
    ]
    run_units(units, {unit: watched(unit) for unit in UNITS}, changes)


def watched(unit: str) -> list[str]:
    """The files ``unit`` runs from: newer than its start means it must restart."""
    files_of = {
        "containerd": [
            *(
                path
                for binary in CONTAINERD_BINARIES
                for path in active_paths("containerd", binary)
            ),
            CONTAINERD_CONFIG,
        ],
        "kubelet": [
            *active_paths("kubelet", "kubelet"),
            KUBELET_CONFIG,
            KUBELET_KUBECONFIG,
            CA_PATH,
            *(
                f"{PKI_DIR}/{name}.{ext}"
                for name in ("kubelet", "kubelet-serving")
                for ext in ("crt", "key")
            ),
        ],
        "kube-proxy": [
            *active_paths("kube-proxy", "kube-proxy"),
            KUBE_PROXY_CONFIG,
            KUBE_PROXY_KUBECONFIG,
            CA_PATH,
            f"{PKI_DIR}/kube-proxy.crt",
            f"{PKI_DIR}/kube-proxy.key",
        ],
    }
    return [unit_path(unit), *files_of[unit]]
