"""Facts about TLS files on a host: certificates (parsed locally) and a private key's public half.

The commands only print files; parsing happens on the control machine with ``cryptography``.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime

from pyinfra.api import FactBase

from galley.pki import identity_of_cert, load_certificate

_SEPARATOR = "==> galley certificate file:"


def certificate_info(pem: str) -> dict:
    """Subject, names, issuer, serial and validity of the first certificate in ``pem``.

    An unparseable text gives ``{"pem": ..., "error": ...}`` instead.
    """
    try:
        cert = load_certificate(pem)
        identity = identity_of_cert(pem)
    except ValueError as exc:
        return {"pem": pem, "error": f"unreadable certificate: {exc}"}
    not_after = cert.not_valid_after_utc
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    return {
        "subject": cert.subject.rfc4514_string(),
        "cn": identity.cn,
        "organization": list(identity.organization),
        "dns_names": list(identity.dns_names),
        "ip_addresses": list(identity.ip_addresses),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial.hex(":"),
        "not_before": cert.not_valid_before_utc,
        "not_after": not_after,
        "days_left": (not_after - datetime.now(UTC)).days,
        "pem": pem,
    }


class Certificate(FactBase):
    """The certificate at ``path`` as a dict (see `certificate_info`), None when missing."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"test ! -e {quoted} || cat {quoted}"

    def process(self, output: list[str]) -> dict | None:
        return certificate_info("\n".join(output) + "\n")


class Certificates(FactBase):
    """Every certificate matching the glob patterns ``paths``: {path: info without the PEM}."""

    def command(self, paths: str = "/etc/etcd/pki/*.crt /etc/kubernetes/pki/*.crt") -> str:
        if not re.fullmatch(r"[\w./*?\[\]\- ]+", paths):
            raise ValueError(f"certificate paths may hold only path and glob characters: {paths}")
        return (
            f'for f in {paths}; do test -f "$f" || continue; '
            f'echo "{_SEPARATOR} $f"; cat "$f"; echo; done'
        )

    def process(self, output: list[str]) -> dict[str, dict]:
        files: dict[str, list[str]] = {}
        lines: list[str] = []
        for line in output:
            if line.startswith(_SEPARATOR):
                lines = files[line[len(_SEPARATOR) :].strip()] = []
            else:
                lines.append(line)
        infos = {path: certificate_info("\n".join(text) + "\n") for path, text in files.items()}
        return {path: {k: v for k, v in info.items() if k != "pem"} for path, info in infos.items()}


class PublicKey(FactBase):
    """The public half (PEM) of the private key at ``path``, None when missing.

    openssl derives it on the host: the private key itself is never read back.
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"test ! -e {quoted} || openssl pkey -in {quoted} -pubout"

    def process(self, output: list[str]) -> str | None:
        return "\n".join(output) + "\n"
