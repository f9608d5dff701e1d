"""flannel on every Kubernetes node (the workers): flanneld as a systemd unit plus its CNI config.

Two modes (``flannel_mode``):

- ``kube`` (default): ``--kube-subnet-mgr``; flanneld reads its node's pod subnet from the
  Node object and stores its lease there. It logs in as the node (``system:node:<name>``,
  O ``system:nodes``), which the Node authorizer allows to read nodes and patch its own, so
  workers hold no etcd credentials.
- ``etcd``: leases in etcd under ``/coreos.com/network``; the network config is written once
  by the first etcd member (`flannel_etcd_network`), and flanneld gets its own etcd client
  certificate (CN ``flannel-etcd-client``).

The network config (``Network`` = ``pod_cidr``, ``SubnetLen``, ``Backend`` from
``flannel_backend``) comes from group data in both modes.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

import hvac
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

from galley.etcd import etcdctl_command, members
from galley.kubernetes import (
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    FLANNEL_DIR,
    K8S_DIR,
    PKI_DIR,
    api_url,
    etcd_servers,
    flannel_certs,
    install_certificates,
    kubeconfig,
    node_name,
    run_units,
    template,
    unit_path,
)
from galley.release import active_paths, install_release

NET_CONF = f"{FLANNEL_DIR}/net-conf.json"
KUBECONFIG = f"{K8S_DIR}/flannel.kubeconfig"
CNI_CONFIG = f"{CNI_CONF_DIR}/10-flannel.conflist"
ETCD_PREFIX = "/coreos.com/network"
UNIT = "flanneld"


def net_conf(data) -> dict:
    """flannel's network config from group data."""
    return {
        "Network": data.pod_cidr,
        "SubnetLen": data.node_cidr_mask_size,
        "Backend": dict(data.flannel_backend),
    }


def release_url(data) -> str:
    """Where the flannel release tarball of ``flannel_version`` is downloaded from."""
    version, arch = data.flannel_version, data.arch
    return (
        f"{data.github_base_url.rstrip('/')}/flannel-io/flannel/releases/download/v{version}/"
        f"flannel-v{version}-linux-{arch}.tar.gz"
    )


def cni_plugin_url(data) -> str:
    """Where flannel's CNI plugin tarball of ``flannel_cni_plugin_version`` comes from."""
    version, arch = data.flannel_cni_plugin_version, data.arch
    return (
        f"{data.github_base_url.rstrip('/')}/flannel-io/cni-plugin/releases/download/v{version}/"
        f"cni-plugin-flannel-linux-{arch}-v{version}.tgz"
    )


def flanneld_args(target) -> list[str]:
    """flanneld's command-line flags for ``target`` (a host), in its configured mode."""
    data = target.data
    (spec,) = flannel_certs(target)
    if data.flannel_mode == "etcd":
        mode = [
            f"--etcd-endpoints={etcd_servers(target.inventory)}",
            f"--etcd-prefix={ETCD_PREFIX}",
            f"--etcd-cafile={spec.ca_path}",
            f"--etcd-certfile={spec.cert_path}",
            f"--etcd-keyfile={spec.key_path}",
        ]
    else:
        mode = [
            "--kube-subnet-mgr",
            f"--kubeconfig-file={KUBECONFIG}",
            f"--net-config-path={NET_CONF}",
        ]
    return [*mode, f"--iface={data.private_ip}", f"--public-ip={data.private_ip}", "--ip-masq"]


def flannel(vault: Callable[[], hvac.Client]) -> None:
    """flannel's part of a deploy for the current host: the etcd network config (etcd mode, on
    the first etcd member), then flanneld on workers."""
    etcd = members()
    if host.data.flannel_mode == "etcd" and etcd and host == etcd[0]:
        flannel_etcd_network()
    if "workers" in host.groups:
        flannel_node(vault=vault)


@deploy("flannel")
def flannel_node(vault: Callable[[], hvac.Client]) -> None:
    """Install, configure and (re)start flanneld on this node, with its CNI config."""
    data = host.data
    cluster = data.cluster_name
    for path, mode in host.loop(
        (
            (K8S_DIR, "755"),
            (PKI_DIR, "700"),
            (FLANNEL_DIR, "755"),
            (f"{FLANNEL_DIR}/pki", "700"),
            (CNI_CONF_DIR, "755"),
        )
    ):
        files.directory(name=f"directory {path}", path=path, user="root", group="root", mode=mode)
    release = install_release(
        "flannel",
        data.flannel_version,
        release_url(data),
        data.flannel_checksums[data.flannel_version][data.arch],
        ["flanneld"],
        strip_components=0,
    )
    specs = flannel_certs(host)
    changes = [release.activation, *install_certificates(host, specs, vault)]
    if data.flannel_mode == "kube":
        changes.append(kubeconfig(KUBECONFIG, cluster, api_url(data), specs[0]))
    variables = {
        "cluster_name": cluster,
        "flannel_mode": data.flannel_mode,
        "node_name": node_name(host),
        "flannel_args": flanneld_args(host),
    }
    changes.append(template("flannel-net-conf.json.j2", NET_CONF, net_conf=net_conf(data)))
    # The conflist's "flannel" type: the meta plugin that hands pods to the bridge plugin
    # with an address from this node's lease (the CNI plugins come with the worker deploy).
    plugin = f"flannel-{data.arch}"
    install_release(
        "flannel-cni-plugin",
        data.flannel_cni_plugin_version,
        cni_plugin_url(data),
        data.flannel_cni_plugin_checksums[data.flannel_cni_plugin_version][data.arch],
        [plugin],
        bin_dir=CNI_BIN_DIR,
        strip_components=0,
        link_names={plugin: "flannel"},
    )
    template("10-flannel.conflist.j2", CNI_CONFIG)
    unit = template("flanneld.service.j2", unit_path(UNIT), **variables)
    changes.append(unit)
    watched = [
        *active_paths("flannel", "flanneld"),
        unit_path(UNIT),
        NET_CONF,
        *(path for spec in specs for path in (spec.cert_path, spec.key_path, spec.ca_path)),
    ]
    if data.flannel_mode == "kube":
        watched.append(KUBECONFIG)
    run_units({UNIT: unit}, {UNIT: watched}, changes)


@deploy("flannel network config in etcd")
def flannel_etcd_network() -> None:
    """Write flannel's network config to etcd once (run on one etcd member, in etcd mode).

    An existing config that differs from group data is an error: changing it under running
    nodes would re-address the pod network.
    """
    wanted = net_conf(host.data)
    key = f"{ETCD_PREFIX}/config"
    endpoint = ["https://127.0.0.1:2379"]
    current = host.get_fact(
        Command,
        command=etcdctl_command(endpoint, "get", key, "--print-value-only")
        + " 2>/dev/null || true",
    )
    if current:
        if json.loads(current) != wanted:
            raise DeployError(
                f"flannel's network config in etcd ({current}) differs from group data "
                f"({json.dumps(wanted)}): changing it would re-address running pods; update "
                "group data or change etcd deliberately"
            )
        return
    value = shlex.quote(json.dumps(wanted, sort_keys=True))
    get = etcdctl_command(endpoint, "get", key, "--print-value-only")
    server.shell(
        name=f"Write flannel's network config to etcd {key}",
        commands=[f'[ -n "$({get})" ] || {etcdctl_command(endpoint, "put", key)} {value}'],
    )
