"""A host's Vault-signed certificate: key made on the host, CSR signed by Vault, kept fresh.

The private key is generated on the host by openssl and never read by galley: only the CSR
and (for the key/certificate match) the key's public half leave the host.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import hvac
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.operations import files, python, server

from galley.facts.tls import Certificate, PublicKey
from galley.pki import (
    Identity,
    identity_of_csr,
    issued_by,
    load_certificate,
    parse_duration,
    read_ca,
    resign_reason,
    sign,
)

# Must produce what pki.LEAF_KEY allows: EC P-256.
GENPKEY_OPTIONS = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"


class HostCertificateError(Exception):
    """Making a host's CSR or installing its signed certificate failed."""


@dataclass(frozen=True)
class _Resign:
    key_path: str
    cert_path: str
    owner: str
    group: str
    identity: Identity
    mount: str
    role: str
    vault: Callable[[], hvac.Client]
    ttl: str | None
    ca_pem: str
    reason: str


@deploy("Host certificate")
def host_certificate(
    key_path: str,
    cert_path: str,
    ca_path: str,
    identity: Identity,
    mount: str,
    role: str,
    vault: Callable[[], hvac.Client],
    owner: str = "root",
    group: str = "root",
    ttl: str | None = None,
) -> list[OperationMeta]:
    """Keep a key, a Vault-signed certificate for ``identity`` and ``mount``'s CA bundle in place.

    ``vault`` returns a connected client (see `galley.vault.lazy_client`): it is asked for the
    mount's CA while preparing and to sign only while executing, when `resign_reason` (or a
    new key) calls for it. The directories must exist. Nothing changes when all is in order.
    Returns the operations it added, for callers that restart a service on change.
    """
    ca_pem = read_ca(vault(), mount)
    ca_bundle = files.put(
        name=f"CA bundle {ca_path}",
        src=io.StringIO(ca_pem),
        dest=ca_path,
        user=owner,
        group=group,
        mode="644",
    )
    public_key = host.get_fact(PublicKey, path=key_path)
    if public_key is None:
        key = server.shell(
            name=f"Generate private key {key_path}", commands=[_genkey(key_path, owner, group)]
        )
    else:
        key = files.file(
            name=f"Private key {key_path}", path=key_path, user=owner, group=group, mode="600"
        )
    cert = host.get_fact(Certificate, path=cert_path)
    reason = resign_reason(
        cert["pem"] if cert else None,
        identity,
        ca_pem,
        datetime.now(UTC),
        public_key_pem=public_key,
        ttl=timedelta(seconds=parse_duration(ttl)) if ttl else None,
    )
    if reason is None and public_key is None:
        reason = "new private key"
    if reason is None:
        return [ca_bundle, key]
    request = _Resign(
        key_path, cert_path, owner, group, identity, mount, role, vault, ttl, ca_pem, reason
    )
    resign = python.call(name=f"Re-sign {cert_path}: {reason}", function=_resign, request=request)
    return [ca_bundle, key, resign]


def _genkey(key_path: str, owner: str, group: str) -> str:
    key, tmp = shlex.quote(key_path), shlex.quote(f"{key_path}.galley-new")
    return (
        f"umask 077 && rm -f {tmp} && openssl genpkey {GENPKEY_OPTIONS} -out {tmp} "
        f"&& chmod 600 {tmp} && chown {shlex.quote(f'{owner}:{group}')} {tmp} && mv -f {tmp} {key}"
    )


def csr_command(key_path: str, identity: Identity) -> str:
    """The openssl command printing a CSR for ``identity`` signed with the key at ``key_path``."""

    def escape(value: str) -> str:
        return "".join(f"\\{char}" if char in "\\/+" else char for char in value)

    subject = "".join(f"/O={escape(org)}" for org in identity.organization)
    subject += f"/CN={escape(identity.cn)}"
    sans = [f"DNS:{name}" for name in identity.dns_names]
    sans += [f"IP:{ip}" for ip in identity.ip_addresses]
    command = f"openssl req -new -key {shlex.quote(key_path)} -subj {shlex.quote(subject)}"
    if sans:
        command += f" -addext {shlex.quote('subjectAltName=' + ','.join(sans))}"
    return command


def _run(host: Host, command: str, doing: str) -> str:
    ok, output = host.run_shell_command(command)
    if not ok:
        raise HostCertificateError(f"{host.name}: {doing} failed: {output.stderr.strip()}")
    return output.stdout


def _resign(state: State, host: Host, request: _Resign) -> None:
    """At execution time: CSR on the host, Vault signs, the certificate replaces the old one."""
    host.log(f"re-signing {request.cert_path}: {request.reason}")
    csr = _run(host, csr_command(request.key_path, request.identity), "creating the CSR") + "\n"
    if identity_of_csr(csr) != request.identity:
        raise HostCertificateError(
            f"{host.name}: openssl made a CSR for {identity_of_csr(csr)}, not {request.identity}"
        )
    signed = sign(request.vault(), request.mount, request.role, csr, request.ttl)
    for warning in signed.warnings:
        host.log(f"Vault: {warning}", logger.warning)
    if not issued_by(load_certificate(signed.certificate), request.ca_pem):
        raise HostCertificateError(
            f"{host.name}: {request.mount} signed {request.cert_path} with another CA than the "
            "one read at the start of the run; re-run"
        )
    cert, tmp = shlex.quote(request.cert_path), shlex.quote(f"{request.cert_path}.galley-new")
    if not host.put_file(io.StringIO(signed.certificate), f"{request.cert_path}.galley-new"):
        raise HostCertificateError(f"{host.name}: uploading {request.cert_path} failed")
    owner = shlex.quote(f"{request.owner}:{request.group}")
    _run(
        host,
        f"chmod 644 {tmp} && chown {owner} {tmp} && mv -f {tmp} {cert}",
        f"installing {request.cert_path}",
    )
