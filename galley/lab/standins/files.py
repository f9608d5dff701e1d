"""File checks shared by the stand-ins (lab/test only; stdlib only, runs on the droplets).

Every check raises :class:`FileProblem` naming the flag (or config field) and the file, the way
the real binaries refuse to start. Certificates and keys are checked with :mod:`ssl`: a
certificate/key pair is loaded into a server context, which fails when they do not match.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import yamlish

_PEM = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)-----END (?P=label)-----"
)
PRIVATE_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
PUBLIC_KEY_LABELS = ("PUBLIC KEY", "RSA PUBLIC KEY")


class FileProblem(Exception):
    """A file given to a stand-in is missing or unusable."""


def read(flag: str, path: str) -> bytes:
    """The file's bytes, or a problem saying it cannot be read."""
    if not path:
        raise FileProblem(f"{flag}: empty file name")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileProblem(f"{flag}: open {path}: {exc.strerror.lower()}") from None


def pem_blocks(flag: str, path: str, data: bytes, labels: tuple[str, ...]) -> list[bytes]:
    """The DER bodies of the PEM blocks with one of ``labels``; at least one must exist."""
    text = data.decode("ascii", errors="replace")
    found = []
    for match in _PEM.finditer(text):
        if match.group("label") in labels:
            try:
                found.append(base64.b64decode("".join(match.group("body").split()), validate=True))
            except binascii.Error:
                raise FileProblem(f"{flag}: {path}: corrupt PEM block") from None
    if not found:
        raise FileProblem(f"{flag}: {path}: no PEM block of type {' or '.join(labels)}")
    return found


def check_ca_bundle(flag: str, path: str) -> None:
    """A file of one or more PEM certificates that OpenSSL accepts as trust anchors."""
    pem_blocks(flag, path, read(flag, path), ("CERTIFICATE",))
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise FileProblem(f"{flag}: {path}: unable to load CA certificates: {exc}") from None


def check_private_key(flag: str, path: str) -> None:
    """A PEM private key."""
    pem_blocks(flag, path, read(flag, path), PRIVATE_KEY_LABELS)


def check_key_file(flag: str, path: str) -> None:
    """PEM public or private keys (as ``--service-account-key-file`` takes)."""
    pem_blocks(flag, path, read(flag, path), PRIVATE_KEY_LABELS + PUBLIC_KEY_LABELS)


def check_pair(cert_flag: str, cert: str, key_flag: str, key: str) -> None:
    """A PEM certificate and the private key that belongs to it."""
    pem_blocks(cert_flag, cert, read(cert_flag, cert), ("CERTIFICATE",))
    check_private_key(key_flag, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = "private key does not match public key" if "MISMATCH" in str(exc) else str(exc)
        raise FileProblem(f"{cert_flag}/{key_flag}: {cert} and {key}: {reason}") from None


def load_config(flag: str, path: str, api_version: str, kind: str) -> dict[str, Any]:
    """A YAML file with the given apiVersion and kind, as a dict."""
    data = read(flag, path)
    try:
        config = yamlish.loads(data.decode())
    except (UnicodeDecodeError, yamlish.YamlError) as exc:
        raise FileProblem(f"{flag}: {path}: {exc}") from None
    if not isinstance(config, dict):
        raise FileProblem(f"{flag}: {path}: not a YAML mapping")
    got = (config.get("apiVersion"), config.get("kind"))
    if got != (api_version, kind):
        raise FileProblem(
            f"{flag}: {path}: expected apiVersion {api_version} kind {kind}, "
            f"got apiVersion {got[0]} kind {got[1]}"
        )
    return config


def _named(flag: str, path: str, config: dict, section: str, field: str) -> dict[str, dict]:
    entries = config.get(section)
    if not isinstance(entries, list) or not entries:
        raise FileProblem(f"{flag}: {path}: no {section}")
    named = {}
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise FileProblem(f"{flag}: {path}: {section} entry without a name")
        if not isinstance(entry.get(field), dict):
            raise FileProblem(f"{flag}: {path}: {section} {entry['name']!r} has no {field}")
        named[entry["name"]] = entry[field]
    return named


class _Material:
    """Inline (``*-data``) or file-referenced PEM material from a kubeconfig, as files."""

    def __init__(self, flag: str, path: str, directory: str) -> None:
        self.flag, self.path, self.directory = flag, path, directory
        self.base = os.path.dirname(os.path.abspath(path))

    def file(self, entry: dict, field: str, what: str) -> str | None:
        data = entry.get(f"{field}-data")
        name = entry.get(field)
        if data and name:
            raise FileProblem(f"{self.flag}: {self.path}: both {field} and {field}-data in {what}")
        if name:
            return name if os.path.isabs(name) else os.path.join(self.base, name)
        if not data:
            return None
        try:
            raw = base64.b64decode(str(data), validate=True)
        except binascii.Error:
            message = f"{self.flag}: {self.path}: {field}-data of {what} is not base64"
            raise FileProblem(message) from None
        target = os.path.join(self.directory, f"{what}-{field}".replace("/", "_"))
        Path(target).write_bytes(raw)
        return target


def check_kubeconfig(flag: str, path: str) -> dict[str, Any]:
    """A kubeconfig (v1 Config) whose current context's cluster and user are usable.

    Returns the current context's ``server``, ``cluster`` and ``user`` names and ``context``, a
    TLS client context trusting the cluster's CA and sending the user's certificate if it has one.
    """
    config = load_config(flag, path, "v1", "Config")
    clusters = _named(flag, path, config, "clusters", "cluster")
    users = _named(flag, path, config, "users", "user")
    contexts = _named(flag, path, config, "contexts", "context")
    current = config.get("current-context")
    if current not in contexts:
        raise FileProblem(f"{flag}: {path}: current-context {current!r} is not a context")
    context = contexts[current]
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if cluster_name not in clusters:
        raise FileProblem(f"{flag}: {path}: context {current!r}: no cluster {cluster_name!r}")
    if user_name not in users:
        raise FileProblem(f"{flag}: {path}: context {current!r}: no user {user_name!r}")
    cluster, user = clusters[cluster_name], users[user_name]
    server = str(cluster.get("server") or "")
    if urlsplit(server).scheme != "https" or not urlsplit(server).hostname:
        raise FileProblem(
            f"{flag}: {path}: cluster {cluster_name!r}: server {server!r} is not https"
        )
    with tempfile.TemporaryDirectory(prefix="standin-kubeconfig-") as directory:
        material = _Material(flag, path, directory)
        ca = material.file(cluster, "certificate-authority", f"cluster {cluster_name}")
        if ca is None:
            raise FileProblem(
                f"{flag}: {path}: cluster {cluster_name!r} has no certificate authority"
            )
        check_ca_bundle(f"{flag} (cluster {cluster_name})", ca)
        client = ssl.create_default_context(cafile=ca)
        cert = material.file(user, "client-certificate", f"user {user_name}")
        key = material.file(user, "client-key", f"user {user_name}")
        if user.get("token") or user.get("tokenFile"):
            if cert or key:
                raise FileProblem(
                    f"{flag}: {path}: user {user_name!r} has a token and a certificate"
                )
        elif cert is None or key is None:
            raise FileProblem(
                f"{flag}: {path}: user {user_name!r} has no client certificate and key"
            )
        else:
            try:
                check_pair("client-certificate", cert, "client-key", key)
            except FileProblem as exc:
                reason = str(exc).rsplit(": ", 1)[-1]
                raise FileProblem(f"{flag}: {path}: user {user_name!r}: {reason}") from None
            client.load_cert_chain(cert, key)
    return {"server": server, "cluster": cluster_name, "user": user_name, "context": client}
