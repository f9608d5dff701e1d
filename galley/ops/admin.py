"""The operator's credentials: keys made on the operator's machine, signed by Vault.

Kept in ``<galley_config_dir>/<cluster>/`` (default ``~/.config/galley/<cluster>/``):
``admin.key`` (0600, never sent anywhere), ``admin.crt`` (CN admin, O galley:cluster-admins,
a group the cluster's RBAC binds to cluster-admin: deleting the binding revokes it; valid
24 h), ``ca.crt`` (the cluster CA) and ``admin.kubeconfig`` pointing at ``api_endpoint`` when
set, else at the first apiserver that is ready (run it again to follow another one).
Re-signed by the same rules as host certificates (`galley.vault.pki.resign_reason`), with the
operator's own Vault token: `galley admin credentials INVENTORY` (deploy tokens cannot sign
it). ``--break-glass`` (a token holding ``<cluster>-break-glass``) also signs ``break-glass.*``:
O system:masters, which no RBAC change takes away, for one hour; the one way to write the
binding on a new cluster, or to mend RBAC.
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
from galley.components.model import RBAC_COLLECTIONS, TEMPLATES, cluster_role_binding
from galley.journal import operator_dir
from galley.ops.kubeapi import ApiError, KubeApi
from galley.vault.client import VaultError, VaultSettings, connect
from galley.vault.pki import (
    ADMIN_ROLE,
    BREAK_GLASS_ROLE,
    CLUSTER_ADMINS,
    Identity,
    RoleSpec,
    mount_path,
    parse_duration,
    read_ca,
    resign_reason,
    sign,
)

READY_TIMEOUT = 3.0
# What writes the binding on a new cluster: `galley admin credentials` exits with it when the
# admin credential may not (run again with --break-glass).
NEEDS_BREAK_GLASS = 3


@dataclass(frozen=True)
class Credential:
    """One of the operator's credentials: the role Vault signs it with (CN and organization
    its first allowed name and its organization, lifetime its ``max_ttl``)."""

    role: RoleSpec

    @property
    def identity(self) -> Identity:
        """The CN and organization it carries."""
        return Identity(self.role.allowed_names[0], organization=self.role.organization)

    @property
    def ttl(self) -> str:
        """How long it is signed for (its role's longest)."""
        return str(self.role.max_ttl)


ADMIN = Credential(ADMIN_ROLE)
BREAK_GLASS = Credential(BREAK_GLASS_ROLE)
# The everyday credential's group, bound to cluster-admin (written with break-glass once).
CLUSTER_ADMINS_BINDING = cluster_role_binding(
    CLUSTER_ADMINS, "cluster-admin", "Group", CLUSTER_ADMINS
)


@dataclass(frozen=True)
class AdminFiles:
    """The operator-side files of one cluster's ``credential``."""

    directory: Path
    credential: Credential = ADMIN

    def _file(self, suffix: str) -> Path:
        return self.directory / f"{self.credential.role.name}.{suffix}"

    @property
    def key(self) -> Path:
        """The private key (0600)."""
        return self._file("key")

    @property
    def cert(self) -> Path:
        """The certificate."""
        return self._file("crt")

    @property
    def ca(self) -> Path:
        """The cluster CA bundle."""
        return self.directory / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The kubeconfig (0600)."""
        return self._file("kubeconfig")


def render_kubeconfig(files: AdminFiles, cluster: str, server: str) -> str:
    """The credential's kubeconfig text (the hosts' kubeconfig template, with local paths)."""
    template = jinja2.Template(
        (TEMPLATES / "kubernetes" / "kubeconfig.j2").read_text(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return template.render(
        cluster_name=cluster,
        server=server,
        ca_path=files.ca,
        user_name=files.credential.identity.cn,
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
        return f"no {files.credential.role.name} key"
    reason = resign_reason(
        _read(files.cert),
        files.credential.identity,
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


def _csr(key: PrivateKeyTypes, identity: Identity) -> str:
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in identity.organization]
        + [x509.NameAttribute(NameOID.COMMON_NAME, identity.cn)]
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
    credential = files.credential
    signed = sign(vault(), mount, credential.role.name, _csr(key, credential.identity), ttl)
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


def operator_paths(cluster: str, credential: Credential = ADMIN) -> dict[str, str]:
    """What the operator's token needs to keep ``credential``: sign its role, read the CA."""
    mount = mount_path(cluster, "k8s")
    sign_path = f"{mount}/sign/{credential.role.name}"
    return {sign_path: "update", f"{mount}/ca/pem": "read", f"{mount}/cert/ca": "read"}


def admin_cli(inventory: Inventory, break_glass: bool = False) -> int:
    """`galley admin credentials`: keep the operator's admin files of the inventory's cluster
    current, signed with the operator's own Vault token (the deploy tokens cannot sign
    them), and with them the cluster RBAC the components' identities and the admins' group
    need; with ``break_glass``, the system:masters files too, which write the RBAC.
    0 when in place or written, 1 on a Vault or API problem, 2 without control-plane hosts,
    `NEEDS_BREAK_GLASS` when the admin credential may not write the RBAC (a new cluster)."""
    (first, *_) = inventory.get_group("control_plane", []) or [None]
    if first is None:
        print("galley: the inventory has no control_plane hosts", file=sys.stderr)
        return 2
    data = first.data
    cluster = data.cluster_name
    settings = VaultSettings.from_data(data)
    urls = operator_api_urls(inventory)
    chosen = [ADMIN, BREAK_GLASS] if break_glass else [ADMIN]
    kept = {}
    try:
        for credential in chosen:
            files = AdminFiles(operator_dir(data), credential)
            kept[credential] = files
            reason = _keep(files, settings, cluster, urls)
            state = f"written ({reason})" if reason else "up to date"
            print(f"{files.kubeconfig}: {state}, valid {credential.ttl}")
            if credential is BREAK_GLASS and reason:
                print(
                    f"galley: break-glass: signed {files.cert}: system:masters for "
                    f"{credential.ttl} (Vault's audit log records it)",
                    file=sys.stderr,
                )
    except VaultError as exc:
        print(f"galley: error: {exc}", file=sys.stderr)
        return 1
    return _ensure_cluster_rbac(kept[BREAK_GLASS] if break_glass else kept[ADMIN], urls)


def _keep(files: AdminFiles, settings: VaultSettings, cluster: str, urls: list[str]) -> str | None:
    """Re-sign and write ``files`` where needed: why, or None when all was in place."""
    client = connect(settings, operator_paths(cluster, files.credential))
    mount = mount_path(cluster, "k8s")
    ca_pem = read_ca(client, mount)
    kubeconfig = render_kubeconfig(files, cluster, first_ready(urls, ca_pem))
    ttl = files.credential.ttl
    reason = update_reason(files, ca_pem, kubeconfig, ttl, datetime.now(UTC))
    if reason is not None:
        write_admin_files(files, lambda: client, mount, ttl, ca_pem, kubeconfig)
    return reason


def _ensure_cluster_rbac(files: AdminFiles, urls: list[str]) -> int:
    """The admins' group binding and the RBAC the components' identities need
    (`galley.components.rbac_objects`), which only the operator may write."""
    api = KubeApi(urls, files)
    for wanted in [CLUSTER_ADMINS_BINDING, *registry.rbac_objects()]:
        what = f"{wanted['kind']} {wanted['metadata']['name']}"
        try:
            print(f"{what}: {api.ensure(RBAC_COLLECTIONS[wanted['kind']], wanted)}")
        except ApiError as exc:
            if exc.status == 403 and files.credential is ADMIN:
                print(
                    f"galley: error: {what}: the admin credential (group {CLUSTER_ADMINS}) may "
                    f"not write it: a new cluster has no binding {CLUSTER_ADMINS} yet; run "
                    "`galley admin credentials INVENTORY --break-glass` once (a 1-hour "
                    "system:masters credential; the token needs the <cluster>-break-glass policy)",
                    file=sys.stderr,
                )
                return NEEDS_BREAK_GLASS
            print(f"galley: error: {what}: {exc}", file=sys.stderr)
            return 1
    return 0
