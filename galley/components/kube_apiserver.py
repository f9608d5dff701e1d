"""kube-apiserver on the ``control_plane`` group: the API, in front of etcd.

It holds the only etcd client certificates of the control plane, the shared service-account
key pair and the secrets encryption key (both declared here as KV values in Vault, made by
`galley vault bootstrap`, read with `galley.vault.kv`).
Apiservers restart one at a time, each answering ``/healthz`` again before the next.
"""

from __future__ import annotations

import base64
import os
import shlex
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyinfra.api.host import Host
from pyinfra.api.state import State

from galley.components.engine import render, render_text, write
from galley.components.etcd import etcd_client_cert
from galley.components.kubernetes import (
    CA_PATH,
    ETCD_CA_PATH,
    K8S_DIR,
    PKI_DIR,
    etcd_servers,
    first_service_ip,
    is_ip,
    k8s_cert,
    kubernetes_binary,
)
from galley.components.model import (
    LOAD_BALANCERS,
    OPERATORS,
    Component,
    Config,
    Configured,
    Directory,
    Metrics,
    Port,
    Unit,
    cluster_role_binding,
)
from galley.etcd.access import READWRITE, Grant
from galley.host.restarts import RestartError, systemctl_restart, wait_until_healthy
from galley.host.secrets import Secret, keep_secret
from galley.vault import kv
from galley.vault.client import once_per_client
from galley.vault.kv import KvSecret
from galley.vault.pki import API_SERVICE_NAMES, Identity, RoleSpec

ENCRYPTION_CONFIG = f"{K8S_DIR}/encryption-config.yaml"
AUTHENTICATION_CONFIG = f"{K8S_DIR}/authentication-config.yaml"
SA_KEY = f"{PKI_DIR}/sa.key"
SA_PUB = f"{PKI_DIR}/sa.pub"
HEALTH_TIMEOUT = 60.0
# The client whose certificate the health check presents (any valid client may read /healthz).
HEALTH_CLIENT = f"{PKI_DIR}/kube-controller-manager"

SERVING_ROLE = RoleSpec("kube-apiserver", "k8s", server=True, client=False)
# The apiservers' client of the kubelets: no group, so a host may renew it itself (nothing
# on a host may hold system:masters); RBAC grants it the kubelet API (`KUBELET_API_ACCESS`).
KUBELET_CLIENT = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_ROLE = RoleSpec(KUBELET_CLIENT, "k8s")
KUBELET_API_ACCESS = cluster_role_binding(
    f"galley:{KUBELET_CLIENT}", "system:kubelet-api-admin", "User", KUBELET_CLIENT
)
CONTROL_PLANE_DIRECTORIES = (Directory(K8S_DIR), Directory(PKI_DIR, "700"))


def apiserver_identity(host: Host) -> Identity:
    """The apiserver's serving identity: in-cluster names, the endpoint, the first service IP,
    the host's own addresses."""
    data = host.data
    endpoint = str(data.get("api_endpoint") or "")
    dns = [*API_SERVICE_NAMES, f"kubernetes.default.svc.{data.cluster_domain}"]
    ips = [str(first_service_ip(data.service_cidr)), data.private_ip, "127.0.0.1"]
    if endpoint:
        (ips if is_ip(endpoint) else dns).append(endpoint)
    return Identity("kube-apiserver", (*dns, "localhost"), tuple(ips))


def healthz_command(address: str, port: int, path: str = "healthz") -> str:
    """curl ``path`` of a control-plane server on this host (each listens on the host's private
    address) with a control-plane client (prints ``ok``)."""
    return " ".join(
        [
            "curl -fsS --max-time 5",
            f"--cacert {CA_PATH}",
            f"--cert {HEALTH_CLIENT}.crt",
            f"--key {HEALTH_CLIENT}.key",
            shlex.quote(f"https://{address}:{port}/{path}"),
        ]
    )


def _healthy(host: Host) -> str | None:
    """None when the local apiserver answers ``ok``, else what it answered."""
    ok, output = host.run_shell_command(
        healthz_command(host.data.private_ip, host.data.api_port) + " 2>&1"
    )
    answer = (output.stdout or "").strip()
    return None if ok and answer == "ok" else answer or "no answer"


def _new_service_account() -> dict[str, str]:
    """The RSA key pair that signs and verifies service-account tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {"private_key": private.decode(), "public_key": public.decode()}


def _new_encryption_key() -> dict[str, str]:
    """The 32-byte secretbox key of the EncryptionConfiguration for Secrets at rest."""
    return {"secretbox_key": base64.b64encode(os.urandom(32)).decode()}


SERVICE_ACCOUNT = KvSecret("kubernetes/service-account", _new_service_account)
ENCRYPTION = KvSecret("kubernetes/encryption", _new_encryption_key)


def _shared(client: Any, cluster: str, secret: KvSecret) -> dict[str, str]:
    """A KV value every apiserver shares, read once per run."""
    return once_per_client(
        client, ("kv", cluster, secret.name), lambda: kv.read(client, cluster, secret)
    )


def _wait_healthy(state: State, host: Host, unit: str, doing: str = "its start") -> None:
    problem = wait_until_healthy(lambda: _healthy(host), HEALTH_TIMEOUT)
    if problem is not None:
        raise RestartError(
            f"{host.name}: kube-apiserver not healthy {HEALTH_TIMEOUT:.0f}s after {doing}: "
            f"{problem}"
        )


def _restart(state: State, host: Host, unit: str) -> None:
    """Restart this apiserver and wait for ``/healthz`` before the next host restarts."""
    systemctl_restart(state, host, unit)
    _wait_healthy(state, host, unit, "its restart; stopping before any other apiserver restarts")


def _configure(host: Host, context: Mapping[str, Any]) -> Configured:
    data = host.data
    cluster = data.cluster_name
    client = context["vault"]()
    service_account = _shared(client, cluster, SERVICE_ACCOUNT)
    encryption_key = _shared(client, cluster, ENCRYPTION)["secretbox_key"]
    encryption = KUBE_APISERVER.config(ENCRYPTION_CONFIG)
    # Secrets go through `keep_secret`: never shown, not even with --diff.
    written = {
        SA_KEY: keep_secret(
            name=f"service-account key {SA_KEY}",
            path=SA_KEY,
            secret=Secret(service_account["private_key"].strip() + "\n"),
        ),
        SA_PUB: write(
            KUBE_APISERVER.config(SA_PUB),
            service_account["public_key"].strip() + "\n",
            name=f"service-account public key {SA_PUB}",
        ),
        ENCRYPTION_CONFIG: keep_secret(
            name=f"secrets encryption config {ENCRYPTION_CONFIG}",
            path=ENCRYPTION_CONFIG,
            secret=Secret(
                render_text(
                    encryption,
                    cluster_name=cluster,
                    encryption_key=encryption_key,
                    kv_mount=kv.kv_mount(cluster),
                )
            ),
            mode=encryption.mode,
        ),
        AUTHENTICATION_CONFIG: render(
            KUBE_APISERVER.config(AUTHENTICATION_CONFIG), cluster_name=cluster
        ),
    }
    variables = {
        "cluster_domain": data.cluster_domain,
        "private_ip": data.private_ip,
        "api_port": data.api_port,
        "sa_key": SA_KEY,
        "sa_pub": SA_PUB,
        "service_cidr": data.service_cidr,
        "etcd_servers": etcd_servers(host.inventory),
        "encryption_config": ENCRYPTION_CONFIG,
        "authentication_config": AUTHENTICATION_CONFIG,
    }
    return Configured(written, variables)


KUBE_APISERVER = Component(
    name="kube-apiserver",
    group="control_plane",
    phase="control plane",
    artifacts=(kubernetes_binary("kube-apiserver"),),
    certs=(
        # The apiserver serves a renewed certificate from the next connection on (dynamic
        # serving certificates), and etcd's client transport loads its client pair for every
        # handshake: renewing either needs no restart.
        k8s_cert("apiserver", SERVING_ROLE, apiserver_identity, reloaded=True),
        # Its kubelet client reloads the pair from the files (client-go's ReloadTLSFiles).
        k8s_cert(
            "apiserver-kubelet-client",
            KUBELET_CLIENT_ROLE,
            lambda host: Identity(KUBELET_CLIENT),
            reloaded=True,
        ),
        etcd_client_cert(
            "apiserver-etcd-client",
            "kube-apiserver-etcd-client",
            PKI_DIR,
            ETCD_CA_PATH,
            # Everything it stores is below its --etcd-prefix (/registry, the default).
            (Grant(READWRITE, "/registry/", prefix=True),),
            reloaded=True,
        ),
    ),
    configs=(
        Config(ENCRYPTION_CONFIG, "kube-apiserver/encryption-config.yaml.j2", mode="600"),
        Config(AUTHENTICATION_CONFIG, "kube-apiserver/authentication-config.yaml.j2"),
        Config(SA_KEY, mode="600"),
        Config(SA_PUB),
    ),
    unit=Unit(
        "kube-apiserver",
        "kube-apiserver/kube-apiserver.service.j2",
        restart=_restart,
        serial=True,
        wait=_wait_healthy,
    ),
    secrets=(SERVICE_ACCOUNT, ENCRYPTION),
    rbac=(KUBELET_API_ACCESS,),
    ports=(
        Port(
            lambda host: host.data.api_port,
            ("workers", "control_plane", OPERATORS, LOAD_BALANCERS),
        ),
    ),
    metrics=(Metrics("apiserver", lambda host: host.data.api_port, mount="k8s"),),
    directories=CONTROL_PLANE_DIRECTORIES,
    checks=("networks", "api"),
    configure=_configure,
)
