"""A host's Vault-signed certificate: key made on the host, CSR signed by Vault, kept fresh.

The private key is generated on the host by openssl and never read by galley: only the CSR
and (for the key/certificate match) the key's public half leave the host.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import hvac
from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.state import State
from pyinfra.operations import files, python, server

from galley.facts.tls import TlsFiles
from galley.host import observed
from galley.host.restarts import under_restart_lock
from galley.host.uploads import install, keep_file
from galley.problems import PreflightError
from galley.vault.client import once_per_client, vault_errors
from galley.vault.pki import (
    DEPLOY_RENEW_FRACTION,
    Identity,
    identity_of_csr,
    issued_by,
    load_certificate,
    parse_duration,
    read_ca,
    resign_reason,
    sign,
)
from galley.vault.renewal import role_names, sign_parameters

# Must produce what pki.LEAF_KEY allows: EC P-256.
GENPKEY_OPTIONS = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
# A re-signed certificate waits here until it is put in place (`_install_for_key`).
STAGED_SUFFIX = ".galley-signed"
# How often the deploy signs again when the host's renewal replaced the key meanwhile.
SIGN_ATTEMPTS = 3


class HostCertificateError(Exception):
    """Making a host's CSR or installing its signed certificate failed."""


@dataclass(frozen=True)
class HostCert:
    """One key and Vault-signed certificate a host should hold."""

    key_path: str
    cert_path: str
    ca_path: str  # where ``mount``'s CA bundle goes
    identity: Identity
    mount: str
    role: str  # the host's own role for it (`galley.vault.renewal`)
    owner: str = "root"
    group: str = "root"
    ttl: str | None = None


@dataclass(frozen=True)
class _Resign:
    cert: HostCert
    vault: Callable[[], hvac.Client]
    ca_pem: str
    reason: str


@deploy("Host certificates")
def host_certificates(
    certs: Sequence[HostCert], vault: Callable[[], hvac.Client]
) -> dict[str, list[OperationMeta]]:
    """Keep keys, Vault-signed certificates and their CA bundles in place on this host.

    One fact reads every key's public half and every certificate (one round trip), and each
    mount's CA is read from Vault once; ``vault`` (`galley.vault.client.lazy_client`) is asked to
    sign only while executing, when `resign_reason` (or a new key) calls for it, so ``--dry``
    shows every "Re-sign <path>: <reason>" without signing. The directories must exist.
    Nothing changes when all is in order. Returns the operations it added by the path they
    write (key, certificate, CA bundle), for callers that restart a service on change.
    """
    keys, cert_paths = [cert.key_path for cert in certs], [cert.cert_path for cert in certs]
    found = observed.tls_files(keys, cert_paths) or host.get_fact(
        TlsFiles, keys=keys, certs=cert_paths
    )
    client = vault()
    ca_pems = {
        mount: once_per_client(client, ("ca", mount), lambda mount=mount: read_ca(client, mount))
        for mount in dict.fromkeys(c.mount for c in certs)
    }
    bundles: dict[str, HostCert] = {}  # CA path -> the first certificate that needs it
    for cert in certs:
        bundles.setdefault(cert.ca_path, cert)
    operations: dict[str, list[OperationMeta]] = {}
    for ca_path, cert in host.loop(bundles.items()):
        pem = ca_pems[cert.mount]
        operations.setdefault(ca_path, []).append(
            keep_file(f"CA bundle {ca_path}", ca_path, pem, cert.owner, cert.group, "644")
        )
    for cert in host.loop(certs):
        written = _key_and_certificate(
            cert, found["keys"][cert.key_path], found["certs"][cert.cert_path], ca_pems, vault
        )
        for path, operation in written:
            operations.setdefault(path, []).append(operation)
    return operations


def _key_and_certificate(
    cert: HostCert,
    key: dict | None,
    cert_pem: str | None,
    ca_pems: dict[str, str],
    vault: Callable[[], hvac.Client],
) -> list[tuple[str, OperationMeta]]:
    operations = []
    if key is None:
        operations.append(
            (
                cert.key_path,
                server.shell(
                    name=f"Generate private key {cert.key_path}",
                    commands=[_genkey(cert.key_path, cert.owner, cert.group)],
                ),
            )
        )
    elif key["public_key"] is None:
        raise HostCertificateError(
            f"{host.name}: {cert.key_path} is not a private key openssl can read; "
            "remove it to have galley make a new one"
        )
    elif (key["mode"], key["user"], key["group"]) != ("600", cert.owner, cert.group):
        operations.append(
            (
                cert.key_path,
                files.file(
                    name=f"Private key {cert.key_path}",
                    path=cert.key_path,
                    user=cert.owner,
                    group=cert.group,
                    mode="600",
                ),
            )
        )
    public_key = key["public_key"] if key else None
    reason = resign_reason(
        cert_pem,
        cert.identity,
        ca_pems[cert.mount],
        datetime.now(UTC),
        public_key_pem=public_key,
        ttl=timedelta(seconds=parse_duration(cert.ttl)) if cert.ttl else None,
        fraction=DEPLOY_RENEW_FRACTION,
    )
    if reason is None and public_key is None:
        reason = "new private key"
    if reason is not None:
        _check_role(cert, vault())
        request = _Resign(cert, vault, ca_pems[cert.mount], reason)
        operations.append(
            (
                cert.cert_path,
                python.call(
                    name=f"Re-sign {cert.cert_path}: {reason}", function=_resign, request=request
                ),
            )
        )
    return operations


def _check_role(cert: HostCert, client: hvac.Client) -> None:
    """Refuse the run, before any host changes, when the host's own role in Vault does not
    sign ``cert`` as the inventory now names it (a host added or readdressed since the last
    `galley vault bootstrap`)."""
    path = f"{cert.mount}/roles/{cert.role}"
    role = once_per_client(client, ("role", path), lambda: _read_role(client, path))
    rerun = (
        "run `galley vault bootstrap --inventory` with this inventory first (nothing was changed)"
    )
    if role is None:
        raise PreflightError(
            f"{host.name}: Vault has no role {cert.role} in {cert.mount} for {cert.cert_path}: "
            + rerun
        )
    differing = [key for key, names in role_names(cert.identity).items() if role.get(key) != names]
    if cert.ttl and role.get("ttl") != parse_duration(cert.ttl):
        differing.append("ttl")
    if differing:
        raise PreflightError(
            f"{host.name}: Vault's role {cert.role} of {cert.mount} does not sign "
            f"{cert.cert_path} as the inventory names it ({', '.join(differing)}): " + rerun
        )


def _read_role(client: hvac.Client, path: str) -> dict | None:
    with vault_errors(f"reading {path} failed"):
        return (client.read(path) or {}).get("data")


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
    """At execution time: CSR on the host, Vault signs, the certificate replaces the old one;
    signed again when the host's own renewal replaced the key meanwhile."""
    cert = request.cert
    host.log(f"re-signing {cert.cert_path}: {request.reason}")
    for _ in range(SIGN_ATTEMPTS):
        csr = _run(host, csr_command(cert.key_path, cert.identity), "creating the CSR") + "\n"
        if identity_of_csr(csr) != cert.identity:
            raise HostCertificateError(
                f"{host.name}: openssl made a CSR for {identity_of_csr(csr)}, not {cert.identity}"
            )
        signed = sign(
            request.vault(), cert.mount, cert.role, csr, parameters=sign_parameters(cert.identity)
        )
        for warning in signed.warnings:
            host.log(f"Vault: {warning}", logger.warning)
        if not issued_by(load_certificate(signed.certificate), request.ca_pem):
            raise HostCertificateError(
                f"{host.name}: {cert.mount} signed {cert.cert_path} with another CA than the "
                "one read at the start of the run; re-run"
            )
        if _install_for_key(state, host, cert, signed.certificate):
            return
        host.log(f"{cert.key_path} was replaced while signing (its renewal): signing again")
    raise HostCertificateError(
        f"{host.name}: {cert.key_path} changed under each of {SIGN_ATTEMPTS} signings of "
        f"{cert.cert_path} (its renewal running beside the deploy); re-run"
    )


def _install_for_key(state: State, host: Host, cert: HostCert, pem: str) -> bool:
    """Put ``pem`` in place of ``cert``'s certificate, under the host's restart lock (the one
    its renewal installs under), only if the key there is still the one it was signed for:
    False (nothing installed) when the renewal replaced the key since the CSR."""
    staged = cert.cert_path + STAGED_SUFFIX
    install(state, host, staged, pem.encode(), cert.owner, cert.group, "644")
    key, cert_path, temp = (shlex.quote(p) for p in (cert.key_path, cert.cert_path, staged))
    swap = (
        f'if [ "$(openssl pkey -in {key} -pubout)" = '
        f'"$(openssl x509 -noout -pubkey -in {temp})" ]; then mv -f {temp} {cert_path} && '
        f"echo installed; else rm -f {temp}; echo key changed; fi"
    )
    output = _run(host, under_restart_lock(f"sh -c {shlex.quote(swap)}"), "installing")
    return output.strip() == "installed"
