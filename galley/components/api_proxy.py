"""The node-local API proxy: HAProxy on every worker, in front of every apiserver.

When no ``api_endpoint`` (a load balancer) is set, a worker's API clients (kubelet, kube-proxy,
flanneld) dial ``https://127.0.0.1:<api_port>``, where HAProxy passes the TLS connection through
to an apiserver that answers ``/readyz`` (checked over TLS against the cluster CA every couple of
seconds). Losing one control-plane host then changes nothing on the workers. The backends come
from the ``control_plane`` group; a change to them is a reload (new connections go to the new
list, open ones finish on the old process), never a restart.

HAProxy is Debian's package; galley runs it as its own unit (``api-proxy``) and masks Debian's
``haproxy.service`` before installing the package, so that one never starts (an upgrade
neither). Its statistics are served as CSV on a root-only socket (`galley.facts.ApiProxyBackends`
reads them for the report), and as Prometheus metrics on the private address, to the
``monitoring`` hosts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra.api.host import Host

from galley.components.engine import render
from galley.components.kubernetes import CA_PATH, control_plane_hosts, needs_proxy
from galley.components.model import Component, Config, Configured, Directory, Metrics, Unit
from galley.facts.api_proxy import BACKEND, STATS_SOCKET

CONFIG_DIR = "/etc/galley/api-proxy"
CONFIG = f"{CONFIG_DIR}/haproxy.cfg"
METRICS_PORT = 8405


def backends(host: Host) -> list[tuple[str, str]]:
    """The proxy's servers: each control-plane host's name and ``address:port``."""
    return [
        (server.name, f"{server.data.private_ip}:{server.data.api_port}")
        for server in control_plane_hosts(host.inventory)
    ]


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    written = {
        CONFIG: render(
            API_PROXY.config(CONFIG),
            cluster_name=host.data.cluster_name,
            api_port=host.data.api_port,
            ca_path=CA_PATH,
            backend=BACKEND,
            servers=backends(host),
            stats_socket=STATS_SOCKET,
            metrics_listen=f"{host.data.private_ip}:{METRICS_PORT}",
        )
    }
    return Configured(written, {"haproxy_config": CONFIG})


API_PROXY = Component(
    name="api-proxy",
    group="workers",
    phase="flannel",
    packages=("haproxy",),
    masked_units=("haproxy",),
    configs=(Config(CONFIG, "api-proxy/haproxy.cfg.j2", reload=True),),
    unit=Unit("api-proxy", "api-proxy/api-proxy.service.j2"),
    directories=(Directory("/etc/galley"), Directory(CONFIG_DIR)),
    metrics=(Metrics("api-proxy", METRICS_PORT),),
    checks=("api",),
    configure=_configure,
    when=needs_proxy,
)
