"""Facts about TLS files on a host: certificates (parsed locally) and a private key's public half.

The commands only print files; parsing happens on the control machine with ``cryptography``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime

from pyinfra.api import FactBase

from galley.vault.pki import identity_of_cert, load_certificate

_SEPARATOR = "==> galley certificate file:"
_KEY_SEPARATOR = "==> galley private key file:"


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


def _sections(output: list[str], separators: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Split output into the lines after each ``<separator> <path>`` line, keyed by (kind,
    path) where ``separators`` maps kind -> separator."""
    sections: dict[tuple[str, str], list[str]] = {}
    lines: list[str] = []
    for line in output:
        for kind, separator in separators.items():
            if line.startswith(separator):
                lines = sections[kind, line[len(separator) :].strip()] = []
                break
        else:
            lines.append(line)
    return sections


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
        files = {path: text for (_, path), text in _sections(output, {"": _SEPARATOR}).items()}
        infos = {path: certificate_info("\n".join(text) + "\n") for path, text in files.items()}
        return {path: {k: v for k, v in info.items() if k != "pem"} for path, info in infos.items()}


class TlsFiles(FactBase):
    """Private keys and certificates in one round trip, for deciding what to (re)make.

    ``{"keys": {path: None | {"mode", "user", "group", "public_key"}}, "certs": {path: None |
    PEM}}``. openssl derives each key's public half on the host: the private key itself is
    never read back; ``public_key`` is None when openssl cannot read the key.
    """

    def command(self, keys: Sequence[str], certs: Sequence[str]) -> str:
        quoted_keys = " ".join(shlex.quote(path) for path in keys)
        quoted_certs = " ".join(shlex.quote(path) for path in certs)
        return (
            f'for f in {quoted_keys}; do echo "{_KEY_SEPARATOR} $f"; test -e "$f" || continue; '
            'stat -c \'%a %U %G\' -- "$f"; openssl pkey -in "$f" -pubout 2>/dev/null || true; '
            f"done; "
            f'for f in {quoted_certs}; do echo "{_SEPARATOR} $f"; test -e "$f" || continue; '
            'echo present; cat -- "$f"; echo; done'
        )

    def process(self, output: list[str]) -> dict[str, dict]:
        sections = _sections(output, {"keys": _KEY_SEPARATOR, "certs": _SEPARATOR})
        found: dict[str, dict] = {"keys": {}, "certs": {}}
        for (kind, path), text in sections.items():
            if not text:
                found[kind][path] = None
            elif kind == "certs":
                found[kind][path] = "\n".join(text[1:]).strip() + "\n"
            else:
                mode, user, group = text[0].split()
                public = "\n".join(text[1:]).strip()
                found[kind][path] = {
                    "mode": mode,
                    "user": user,
                    "group": group,
                    "public_key": public + "\n" if public else None,
                }
        return found
