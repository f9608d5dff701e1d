"""Stand-in Vault's PKI secrets engine."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from galley.lab.vault_standin.plumbing import Backend, Call, Mount, Raw, Resp, _route
from galley.lab.vault_standin.values import (
    _as_bool,
    _as_duration,
    _as_int,
    _as_list,
    _bad,
    _get,
    _go_duration,
    _now,
    _rfc3339,
)

PEM_CHAIN = "application/pem-certificate-chain"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_HOSTNAME = re.compile(
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])\.?$"
)
_WILDCARD_LABEL = re.compile(r"^(\*|[a-zA-Z0-9*]|[a-zA-Z0-9*][a-zA-Z0-9*-]*[a-zA-Z0-9*])$")
_CURVES: dict[int, Callable[[], ec.EllipticCurve]] = {
    224: ec.SECP224R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1,
}  # fmt: skip
_RSA_BITS = (2048, 3072, 4096, 8192)
_KEY_USAGES = {
    "digitalsignature": "digital_signature",
    "contentcommitment": "content_commitment",
    "keyencipherment": "key_encipherment",
    "dataencipherment": "data_encipherment",
    "keyagreement": "key_agreement",
    "certsign": "key_cert_sign",
    "crlsign": "crl_sign",
    "encipheronly": "encipher_only",
    "decipheronly": "decipher_only",
}
_EXT_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "serverauth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientauth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codesigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailprotection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocspsigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
_REQUIRE_CN = (
    'the common_name field is required, or must be provided in a CSR with "use_csr_common_name" '
    'set to true, unless "require_cn" is set to false'
)
_ROLE_BOOLS = {
    "allow_localhost": True, "allow_bare_domains": False, "allow_subdomains": False,
    "allow_glob_domains": False, "allow_any_name": False, "enforce_hostnames": True,
    "allow_ip_sans": True, "allow_wildcard_certificates": True, "allowed_domains_template": False,
    "allowed_uri_sans_template": False, "allow_token_displayname": False,
    "basic_constraints_valid_for_non_ca": False, "server_flag": True, "client_flag": True,
    "code_signing_flag": False, "email_protection_flag": False, "use_csr_common_name": True,
    "use_csr_sans": True, "require_cn": True, "generate_lease": False, "no_store": False,
    "use_pss": False,
}  # fmt: skip
_ROLE_LISTS = {
    "allowed_domains": [], "allowed_other_sans": [], "allowed_serial_numbers": [],
    "allowed_uri_sans": [], "cn_validations": ["email", "hostname"], "country": [],
    "ext_key_usage": [], "ext_key_usage_oids": [],
    "key_usage": ["DigitalSignature", "KeyAgreement", "KeyEncipherment"], "locality": [],
    "organization": [], "ou": [], "policy_identifiers": [], "postal_code": [], "province": [],
    "street_address": [],
}  # fmt: skip
_ROLE_DURATIONS = {"ttl": 0, "max_ttl": 0, "not_before_duration": 30}
_ROLE_OTHERS = ("key_type", "key_bits", "signature_bits", "issuer_ref", "not_after")


def _key_params(key_type: str, key_bits: int) -> tuple[str, int]:
    """Validate a key type and size, filling Vault's default size."""
    if key_type == "rsa":
        key_bits = key_bits or 2048
        if key_bits not in _RSA_BITS:
            raise _bad(f"unsupported bit length for RSA key: {key_bits}")
    elif key_type == "ec":
        key_bits = key_bits or 256
        if key_bits not in _CURVES:
            raise _bad(f"unsupported bit length for EC key: {key_bits}")
    elif key_type != "any":
        raise _bad(f"unknown key type: {key_type}")
    return key_type, key_bits


def _new_key(key_type: str, key_bits: int) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    return ec.generate_private_key(_CURVES[key_bits]())


def _glob(pattern: str, name: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name, re.DOTALL) is not None


def _idna_hostname(name: str) -> str | None:
    """The ASCII form of ``name`` when it is a valid hostname, else None."""
    try:
        converted = name.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return converted if _HOSTNAME.match(converted) else None


def _name_allowed(role: dict[str, Any], name: str) -> bool:
    """Vault's validateNames for one DNS name or email address."""
    reduced, is_email, is_wildcard, wildcard_label = name, False, False, ""
    if "@" in reduced:
        parts = reduced.split("@")
        if len(parts) != 2:
            return False
        reduced, is_email = parts[1], True
    email_domain = reduced
    if "*" in reduced:
        is_wildcard = True
        if not role["allow_wildcard_certificates"] or reduced.count("*") > 1 or is_email:
            return False
        wildcard_label, _, reduced = reduced.partition(".")
    if role["enforce_hostnames"]:
        if reduced and _idna_hostname(reduced) is None:
            return False
        if is_wildcard and not _WILDCARD_LABEL.match(wildcard_label):
            return False
    if role["allow_any_name"]:
        return True
    if role["allow_localhost"]:
        if reduced in ("localhost", "localdomain"):
            return True
        if role["allow_subdomains"] and reduced.endswith((".localhost", ".localdomain")):
            return True
    for domain in filter(None, role["allowed_domains"]):
        bare = name.lower() == domain.lower() or (
            is_email and email_domain.lower() == domain.lower()
        )
        if role["allow_bare_domains"] and bare:
            return True
        if role["allow_subdomains"] and (
            reduced.endswith("." + domain) or (is_wildcard and reduced.lower() == domain.lower())
        ):
            return True
        if role["allow_glob_domains"] and "*" in domain and _glob(domain, name):
            return True
    return False


def _common_name_allowed(role: dict[str, Any], cn: str) -> bool:
    validations = role["cn_validations"]
    if validations == ["disabled"]:
        return True
    if not _name_allowed(role, cn):
        return False
    return not validations or ("email" if "@" in cn else "hostname") in validations


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def _serial(cert: x509.Certificate) -> str:
    digits = format(cert.serial_number, "x")
    digits = "0" * (len(digits) % 2) + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


@dataclass
class CertSpec:
    """What goes into a certificate once a request has passed the role's checks."""

    cn: str
    dns: list[str]
    emails: list[str]
    ips: list[IpAddress]
    organization: list[str]
    ou: list[str]
    not_after: datetime
    not_before_duration: int
    warnings: list[str]


@dataclass
class Issuer:
    """A CA certificate and its key inside one PKI mount."""

    id: str
    key_id: str
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> str:
        return _pem(self.cert)


@dataclass
class StoredCert:
    """An issued certificate as cert/<serial> and revoke see it."""

    cert: x509.Certificate
    issuer_id: str
    revoked_at: datetime | None = None


def _build_certificate(
    spec: CertSpec,
    public_key: Any,
    signer: PrivateKey,
    issuer: x509.Certificate | None,
    *,
    key_usage: list[str],
    ext_key_usage: list[x509.ObjectIdentifier],
    ca: bool,
    basic_constraints: bool = False,
) -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organization]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in spec.ou]
    if spec.cn:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.cn))
    subject = x509.Name(attributes)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    issuer_ski = (
        issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if issuer
        else ski
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(seconds=spec.not_before_duration))
        .not_valid_after(spec.not_after.replace(microsecond=0))
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if ca or basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    usages = {_KEY_USAGES[u.lower()] for u in key_usage if u.lower() in _KEY_USAGES}
    if usages:
        flags = {name: name in usages for name in _KEY_USAGES.values()}
        if not flags["key_agreement"]:
            flags["encipher_only"] = flags["decipher_only"] = False
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if ext_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext_key_usage), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    names += [x509.RFC822Name(e) for e in spec.emails]
    names += [x509.IPAddress(ip) for ip in spec.ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not spec.cn)
    return builder.sign(signer, _hash_for(signer))


class PkiBackend(Backend):
    """PKI secrets engine: root generation, roles, sign/issue, CA reads, revoke."""

    mount_type = "pki"

    def __init__(self, mount: Mount) -> None:
        super().__init__()
        self.mount = mount
        self.issuers: dict[str, Issuer] = {}
        self.default_issuer: str | None = None
        self.roles: dict[str, dict[str, Any]] = {}
        self.certs: dict[str, StoredCert] = {}
        self.routes = [
            _route(r"root/generate/(internal|exported)", update=self._generate_root),
            _route(r"roles", list=self._list_roles),
            _route(
                r"roles/([^/]+)",
                exists=lambda name: name in self.roles,
                read=self._read_role,
                update=self._write_role,
                delete=self._delete_role,
            ),
            _route(r"sign/([^/]+)", update=self._sign),
            _route(r"issue/([^/]+)", update=self._issue),
            _route(r"ca/pem", read=self._ca_pem),
            _route(r"ca_chain", read=self._ca_pem),
            _route(r"cert/ca", read=self._cert_ca),
            _route(r"cert/ca_chain", read=self._cert_ca),
            _route(r"certs", list=self._list_certs),
            _route(r"cert/([^/]+)", read=self._read_cert),
            _route(r"revoke", update=self._revoke),
        ]

    # -- issuers ------------------------------------------------------------------------------

    def _issuer(self) -> Issuer:
        if self.default_issuer is None:
            raise _bad("no default issuer currently configured")
        return self.issuers[self.default_issuer]

    def _generate_root(self, call: Call, kind: str) -> Resp:
        data = call.data
        key_type, key_bits = _key_params(
            str(data.get("key_type") or "rsa"), _get(data, "key_bits", _as_int, 0)
        )
        if key_type == "any":
            raise _bad('key_type "any" is not allowed for a root certificate')
        role = self._role_from(
            {
                "ttl": data.get("ttl"),
                "organization": data.get("organization"),
                "ou": data.get("ou"),
                "allow_any_name": True,
                "enforce_hostnames": False,
                "cn_validations": ["disabled"],
                "use_csr_common_name": False,
                "use_csr_sans": False,
                "key_type": key_type,
                "key_bits": key_bits,
            }
        )
        spec = self._spec(role, data, csr=None, issuer=None)
        key = _new_key(key_type, key_bits)
        cert = _build_certificate(
            spec,
            key.public_key(),
            key,
            None,
            key_usage=["CertSign", "CRLSign"],
            ext_key_usage=[],
            ca=True,
        )
        issuer = Issuer(str(uuid.uuid4()), str(uuid.uuid4()), cert, key)
        self.issuers[issuer.id] = issuer
        if self.default_issuer is None:
            self.default_issuer = issuer.id
        self.certs[_serial(cert)] = StoredCert(cert, issuer.id)
        result = {
            "certificate": issuer.pem,
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "issuer_id": issuer.id,
            "issuer_name": "",
            "issuing_ca": issuer.pem,
            "key_id": issuer.key_id,
            "key_name": "",
            "serial_number": _serial(cert),
        }
        if kind == "exported":
            result.update(self._private_key_fields(key, data))
        return Resp(result, warnings=spec.warnings)

    def _ca_pem(self, call: Call) -> Raw:
        if self.default_issuer is None:
            return Raw(204, PEM_CHAIN, b"")
        return Raw(200, PEM_CHAIN, (self._issuer().pem + "\n").encode())

    def _cert_ca(self, call: Call) -> Resp | None:
        if self.default_issuer is None:
            return None
        issuer = self._issuer()
        return Resp(
            {
                "certificate": issuer.pem,
                "ca_chain": [issuer.pem],
                "issuer_id": issuer.id,
                "revocation_time": 0,
                "revocation_time_rfc3339": "",
            }
        )

    # -- roles --------------------------------------------------------------------------------

    def _role_from(self, data: dict[str, Any]) -> dict[str, Any]:
        """A complete role from request fields and Vault's defaults, validated."""
        role: dict[str, Any] = {}
        for name, default in _ROLE_BOOLS.items():
            role[name] = _get(data, name, _as_bool, default)
        for name, default in _ROLE_LISTS.items():
            role[name] = _get(data, name, _as_list, list(default))
        for name, default in _ROLE_DURATIONS.items():
            role[name] = _get(data, name, _as_duration, default)
        role["key_type"], role["key_bits"] = _key_params(
            str(data.get("key_type") or "rsa"), _get(data, "key_bits", _as_int, 0)
        )
        role["signature_bits"] = _get(data, "signature_bits", _as_int, 0)
        role["issuer_ref"] = str(data.get("issuer_ref") or "default")
        role["not_after"] = str(data.get("not_after") or "")
        if role["max_ttl"] and role["ttl"] > role["max_ttl"]:
            raise _bad('"ttl" value must be less than "max_ttl" value')
        return dict(sorted(role.items()))

    def _list_roles(self, call: Call) -> Resp:
        return Resp({"keys": sorted(self.roles)})

    def _read_role(self, call: Call, name: str) -> Resp | None:
        return Resp(self.roles[name]) if name in self.roles else None

    def _write_role(self, call: Call, name: str) -> Resp:
        known = {*_ROLE_BOOLS, *_ROLE_LISTS, *_ROLE_DURATIONS, *_ROLE_OTHERS, "name"}
        self.roles[name] = self._role_from(call.data)
        ignored = sorted(set(call.data) - known)
        warnings = [f"Endpoint ignored these unrecognized parameters: [{' '.join(ignored)}]"]
        return Resp(self.roles[name], warnings=warnings if ignored else [])

    def _delete_role(self, call: Call, name: str) -> None:
        self.roles.pop(name, None)

    def _role(self, name: str) -> dict[str, Any]:
        if name not in self.roles:
            raise _bad(f"unknown role: {name}")
        return self.roles[name]

    # -- sign / issue -------------------------------------------------------------------------

    def _spec(
        self,
        role: dict[str, Any],
        data: dict[str, Any],
        csr: x509.CertificateSigningRequest | None,
        issuer: Issuer | None,
    ) -> CertSpec:
        """Vault's generateCreationBundle: names, their checks, and the TTL."""
        cn = ""
        if csr is not None and role["use_csr_common_name"]:
            attrs = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(attrs[0].value) if attrs else ""
        if not cn:
            cn = str(data.get("common_name") or "")
            if not cn and role["require_cn"]:
                raise _bad(_REQUIRE_CN)
        from_csr = csr is not None and role["use_csr_sans"]
        sans = self._csr_sans(csr) if from_csr and csr is not None else None
        dns = list(sans.get_values_for_type(x509.DNSName)) if sans else []
        emails = list(sans.get_values_for_type(x509.RFC822Name)) if sans else []
        extra = [cn] if cn and not _get(data, "exclude_cn_from_sans", _as_bool, False) else []
        if not from_csr:
            extra += sorted(set(_as_list(data.get("alt_names"), "alt_names")))
        for name in extra:
            if "@" in name:
                emails.append(name)
            elif (converted := _idna_hostname(name)) is not None:
                dns.append(converted)
        if cn and not _common_name_allowed(role, cn):
            raise _bad(f"common name {cn} not allowed by this role")
        for name in dns:
            if not _name_allowed(role, name):
                raise _bad(f"subject alternate name {name} not allowed by this role")
        for name in emails:
            if not _name_allowed(role, name):
                raise _bad(f"email address {name} not allowed by this role")
        ips = self._ip_sans(role, data, sans, from_csr)
        ttl = _get(data, "ttl", _as_duration, 0) or role["ttl"]
        max_ttl = role["max_ttl"] or self.mount.effective_max_ttl
        ttl = ttl or self.mount.effective_default_ttl
        warnings = []
        if ttl > max_ttl:
            warnings.append(
                f'TTL "{_go_duration(ttl)}" is longer than permitted maxTTL '
                f'"{_go_duration(max_ttl)}", so maxTTL is being used'
            )
            ttl = max_ttl
        not_after = _now() + timedelta(seconds=ttl)
        if issuer is not None and not_after > issuer.cert.not_valid_after_utc:
            raise _bad(
                f"cannot satisfy request, as TTL would result in notAfter of {_rfc3339(not_after)}"
                " that is beyond the expiration of the CA certificate at "
                f"{_rfc3339(issuer.cert.not_valid_after_utc)}"
            )
        return CertSpec(
            cn=cn,
            dns=sorted(set(dns)),
            emails=sorted(set(emails)),
            ips=ips,
            organization=list(dict.fromkeys(role["organization"])),
            ou=list(dict.fromkeys(role["ou"])),
            not_after=not_after,
            not_before_duration=role["not_before_duration"],
            warnings=warnings,
        )

    @staticmethod
    def _csr_sans(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
        try:
            return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None

    @staticmethod
    def _ip_sans(
        role: dict[str, Any],
        data: dict[str, Any],
        sans: x509.SubjectAlternativeName | None,
        from_csr: bool,
    ) -> list[IpAddress]:
        if from_csr:
            ips = list(sans.get_values_for_type(x509.IPAddress)) if sans else []
            if ips and not role["allow_ip_sans"]:
                raise _bad(
                    "IP Subject Alternative Names are not allowed in this role, "
                    "but was provided some via CSR"
                )
            if sans and sans.get_values_for_type(x509.UniformResourceIdentifier):
                raise _bad(
                    "URI Subject Alternative Names are not allowed in this role, "
                    "but were provided via CSR"
                )
            return [ip for ip in ips if isinstance(ip, IpAddress)]
        requested = _as_list(data.get("ip_sans"), "ip_sans")
        if requested and not role["allow_ip_sans"]:
            raise _bad(
                "IP Subject Alternative Names are not allowed in this role, "
                f"but was provided [{' '.join(requested)}]"
            )
        parsed = []
        for value in requested:
            try:
                parsed.append(ipaddress.ip_address(value))
            except ValueError:
                raise _bad(f'the value "{value}" is not a valid IP address') from None
        return parsed

    def _leaf(
        self, role: dict[str, Any], spec: CertSpec, public_key: Any, issuer: Issuer
    ) -> dict[str, Any]:
        ekus = [
            oid
            for flag, oid in (
                ("server_flag", ExtendedKeyUsageOID.SERVER_AUTH),
                ("client_flag", ExtendedKeyUsageOID.CLIENT_AUTH),
                ("code_signing_flag", ExtendedKeyUsageOID.CODE_SIGNING),
                ("email_protection_flag", ExtendedKeyUsageOID.EMAIL_PROTECTION),
            )
            if role[flag]
        ]
        ekus += [
            _EXT_KEY_USAGES[u.lower()]
            for u in role["ext_key_usage"]
            if u.lower() in _EXT_KEY_USAGES
        ]
        ekus += [x509.ObjectIdentifier(oid) for oid in role["ext_key_usage_oids"]]
        cert = _build_certificate(
            spec,
            public_key,
            issuer.key,
            issuer.cert,
            key_usage=role["key_usage"],
            ext_key_usage=list(dict.fromkeys(ekus)),
            ca=False,
            basic_constraints=role["basic_constraints_valid_for_non_ca"],
        )
        if not role["no_store"]:
            self.certs[_serial(cert)] = StoredCert(cert, issuer.id)
        return {
            "certificate": _pem(cert),
            "expiration": int(cert.not_valid_after_utc.timestamp()),
            "issuing_ca": issuer.pem,
            "ca_chain": [issuer.pem],
            "serial_number": _serial(cert),
        }

    @staticmethod
    def _check_format(data: dict[str, Any]) -> None:
        fmt = str(data.get("format") or "pem")
        if fmt != "pem":
            raise _bad(f'the stand-in supports format "pem" only, not "{fmt}"')

    @staticmethod
    def _parse_csr(text: Any) -> x509.CertificateSigningRequest:
        if not text:
            raise _bad('"csr" is empty')
        if "-----BEGIN" not in str(text):
            raise _bad("csr contains no data")
        try:
            csr = x509.load_pem_x509_csr(str(text).encode())
        except ValueError as exc:
            raise _bad(f"certificate request could not be parsed: {exc}") from None
        if not csr.is_signature_valid:
            raise _bad("request signature invalid")
        return csr

    @staticmethod
    def _check_csr_key(role: dict[str, Any], public_key: Any) -> None:
        if isinstance(public_key, rsa.RSAPublicKey):
            actual, bits = "rsa", public_key.key_size
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            actual, bits = "ec", public_key.curve.key_size
        else:
            raise _bad(f"role requires keys of type {role['key_type']}")
        wanted = role["key_type"]
        if wanted not in ("any", actual):
            raise _bad(f"role requires keys of type {wanted}")
        minimum = role["key_bits"] if wanted != "any" else (2048 if actual == "rsa" else 224)
        if bits < minimum:
            raise _bad(
                f"role requires a minimum of a {minimum}-bit key, but CSR's key is {bits} bits"
            )

    def _sign(self, call: Call, role_name: str) -> Resp:
        role = self._role(role_name)
        issuer = self._issuer()
        self._check_format(call.data)
        csr = self._parse_csr(call.data.get("csr"))
        self._check_csr_key(role, csr.public_key())
        spec = self._spec(role, call.data, csr, issuer)
        return Resp(self._leaf(role, spec, csr.public_key(), issuer), warnings=spec.warnings)

    def _issue(self, call: Call, role_name: str) -> Resp:
        role = self._role(role_name)
        if role["key_type"] == "any":
            raise _bad('role key type "any" not allowed for issuing certificates, only signing')
        self._check_format(call.data)
        issuer = self._issuer()
        spec = self._spec(role, call.data, None, issuer)
        key = _new_key(role["key_type"], role["key_bits"])
        result = self._leaf(role, spec, key.public_key(), issuer)
        result.update(self._private_key_fields(key, call.data))
        return Resp(result, warnings=spec.warnings)

    @staticmethod
    def _private_key_fields(key: PrivateKey, data: dict[str, Any]) -> dict[str, str]:
        pkcs8 = str(data.get("private_key_format") or "der") == "pkcs8"
        fmt = serialization.PrivateFormat
        text = key.private_bytes(
            serialization.Encoding.PEM,
            fmt.PKCS8 if pkcs8 else fmt.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
        return {"private_key": text.strip(), "private_key_type": kind}

    # -- stored certificates ------------------------------------------------------------------

    @staticmethod
    def _normalise_serial(serial: str) -> str:
        return serial.strip().lower().replace("-", ":")

    def _list_certs(self, call: Call) -> Resp:
        return Resp({"keys": sorted(self.certs)})

    def _read_cert(self, call: Call, serial: str) -> Resp | None:
        stored = self.certs.get(self._normalise_serial(serial))
        if stored is None:
            return None
        revoked = stored.revoked_at
        return Resp(
            {
                "certificate": _pem(stored.cert),
                "issuer_id": stored.issuer_id,
                "revocation_time": int(revoked.timestamp()) if revoked else 0,
                "revocation_time_rfc3339": _rfc3339(revoked) if revoked else "",
            }
        )

    def _revoke(self, call: Call) -> Resp:
        serial = self._normalise_serial(str(call.data.get("serial_number") or ""))
        stored = self.certs.get(serial)
        if stored is None:
            raise _bad(f"certificate with serial {serial} not found.")
        if any(_serial(issuer.cert) == serial for issuer in self.issuers.values()):
            raise _bad(f"adding issuer (id: {stored.issuer_id}) to its own CRL is not allowed")
        stored.revoked_at = stored.revoked_at or _now()
        return Resp(
            {
                "revocation_time": int(stored.revoked_at.timestamp()),
                "revocation_time_rfc3339": _rfc3339(stored.revoked_at),
                "state": "revoked",
            }
        )
