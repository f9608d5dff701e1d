"""The operator's admin credential: key made on the operator's machine, signed by Vault.

Kept in ``<galley_config_dir>/<cluster>/`` (default ``~/.config/galley/<cluster>/``):
``admin.key`` (0600, never sent anywhere), ``admin.crt`` (CN admin, O system:masters),
``ca.crt`` (the cluster CA) and ``admin.kubeconfig`` pointing at ``api_endpoint`` when set,
else at the first apiserver that is ready (run it again to follow another one). Re-signed
by the same rules as host certificates (`galley.vault.pki.resign_reason`), with the operator's own
Vault token: `galley admin credentials INVENTORY` (deploy tokens cannot sign it).
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import hvac
import jinja2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from pyinfra.api import Inventory

from galley import components as registry
from galley.components.kubernetes import operator_api_urls
from galley.components.model import RBAC_COLLECTIONS, TEMPLATES
from galley.journal import operator_dir
from galley.ops.kubeapi import ApiError, KubeApi
from galley.vault.client import VaultError, VaultSettings, connect
from galley.vault.pki import Identity, mount_path, parse_duration, read_ca, resign_reason, sign

ADMIN = Identity("admin", organization=("system:masters",))
ROLE = "admin"
READY_TIMEOUT = 3.0


@dataclass(frozen=True)
class AdminFiles:
    """The operator-side files of one cluster."""

    directory: Path

    @property
    def key(self) -> Path:
        """The admin private key (0600)."""
        return self.directory / "admin.key"

    @property
    def cert(self) -> Path:
        """The admin certificate."""
        return self.directory / "admin.crt"

    @property
    def ca(self) -> Path:
        """The cluster CA bundle."""
        return self.directory / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.directory / "admin.kubeconfig"


def render_kubeconfig(files: AdminFiles, cluster: str, server: str) -> str:
    """The admin kubeconfig text (the hosts' kubeconfig template, with local paths)."""
    template = jinja2.Template(
        (TEMPLATES / "kubernetes" / "kubeconfig.j2").read_text(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return template.render(
        cluster_name=cluster,
        server=server,
        ca_path=files.ca,
        user_name=ADMIN.cn,
        cert_path=files.cert,
        key_path=files.key,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _public_key(files: AdminFiles) -> str | None:
    pem = _read(files.key)
    if pem is None:
        return None
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def update_reason(
    files: AdminFiles, ca_pem: str, kubeconfig: str, ttl: str, now: datetime
) -> str | None:
    """Why the operator's files must be (re)written, or None when all is in place."""
    public_key = _public_key(files)
    if public_key is None:
        return "no admin key"
    reason = resign_reason(
        _read(files.cert),
        ADMIN,
        ca_pem,
        now,
        public_key_pem=public_key,
        ttl=timedelta(seconds=parse_duration(ttl)),
    )
    if reason:
        return reason
    if _read(files.ca) != ca_pem:
        return "CA bundle changed"
    if _read(files.kubeconfig) != kubeconfig:
        return "kubeconfig changed"
    return None


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".galley-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _csr(key: PrivateKeyTypes) -> str:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in ADMIN.organization]
        + [x509.NameAttribute(NameOID.COMMON_NAME, ADMIN.cn)]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def write_admin_files(
    files: AdminFiles,
    vault: Callable[[], hvac.Client],
    mount: str,
    ttl: str,
    ca_pem: str,
    kubeconfig: str,
) -> None:
    """Make the key if missing, have Vault sign a CSR for it, write cert, CA and kubeconfig."""
    files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _read(files.key) is None:
        new = ec.generate_private_key(ec.SECP256R1())
        pem = new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(files.key, pem.decode(), 0o600)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    signed = sign(vault(), mount, ROLE, _csr(key), ttl)
    _write(files.cert, signed.certificate, 0o644)
    _write(files.ca, ca_pem, 0o644)
    _write(files.kubeconfig, kubeconfig, 0o600)


def first_ready(urls: list[str], ca_pem: str, timeout: float = READY_TIMEOUT) -> str:
    """The first of ``urls`` whose ``/readyz`` answers 200 (anonymously, TLS verified against
    ``ca_pem``); the first of them when none does."""
    context = ssl.create_default_context(cadata=ca_pem)
    for url in urls:
        parts = urlsplit(url)
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, context=context, timeout=timeout
        )
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return url
        except (OSError, http.client.HTTPException):
            continue
        finally:
            connection.close()
    return urls[0]


def operator_paths(cluster: str) -> dict[str, str]:
    """What the operator's token needs here: sign the admin role and read the cluster CA."""
    mount = mount_path(cluster, "k8s")
    return {f"{mount}/sign/{ROLE}": "update", f"{mount}/ca/pem": "read", f"{mount}/cert/ca": "read"}


def admin_cli(inventory: Inventory) -> int:
    """`galley admin credentials`: keep the operator's admin files of the inventory's cluster
    current, signed with the operator's own Vault token (the deploy tokens cannot sign
    ``system:masters``), and with them the cluster RBAC the components' identities need.
    0 when in place or written, 1 on a Vault or API problem, 2 without control-plane hosts."""
    (first, *_) = inventory.get_group("control_plane", []) or [None]
    if first is None:
        print("galley: the inventory has no control_plane hosts", file=sys.stderr)
        return 2
    data = first.data
    cluster = data.cluster_name
    files = AdminFiles(operator_dir(data))
    try:
        settings = VaultSettings.from_data(data)
        client = connect(settings, operator_paths(cluster))
        mount = mount_path(cluster, "k8s")
        ca_pem = read_ca(client, mount)
        server = first_ready(operator_api_urls(inventory), ca_pem)
        kubeconfig = render_kubeconfig(files, cluster, server)
        ttl = data.kubernetes_cert_ttl
        reason = update_reason(files, ca_pem, kubeconfig, ttl, datetime.now(UTC))
        if reason is not None:
            write_admin_files(files, lambda: client, mount, ttl, ca_pem, kubeconfig)
    except VaultError as exc:
        print(f"galley: error: {exc}", file=sys.stderr)
        return 1
    print(f"{files.kubeconfig}: {'written (' + reason + ')' if reason else 'up to date'}")
    return _ensure_cluster_rbac(files, operator_api_urls(inventory))


def _ensure_cluster_rbac(files: AdminFiles, urls: list[str]) -> int:
    """The RBAC the components' identities need (`galley.components.rbac_objects`), which
    only the operator may write."""
    api = KubeApi(urls, files)
    for wanted in registry.rbac_objects():
        what = f"{wanted['kind']} {wanted['metadata']['name']}"
        try:
            print(f"{what}: {api.ensure(RBAC_COLLECTIONS[wanted['kind']], wanted)}")
        except ApiError as exc:
            print(f"galley: error: {what}: {exc}", file=sys.stderr)
            return 1
    return 0
