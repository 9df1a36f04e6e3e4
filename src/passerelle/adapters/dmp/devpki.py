"""A development PKI shaped like IGC-Santé's ORG certificates, for the sandbox, the tests and rehearsals.

:func:`write_dev_pki` writes, in one folder: ``ca.pem`` (a self-signed test CA), ``auth.pem``/``auth.key``
(structure AUTH_CLI: OU = IdNat_Struct, KU digitalSignature + keyEncipherment, EKU clientAuth),
``sign.pem``/``sign.key`` (structure SIGN: OU = IdNat_Struct, KU digitalSignature + nonRepudiation,
EKU emailProtection like the ANS example), ``sign.p12`` with ``sign.password`` (PKCS#12 form of SIGN), and
``server.pem``/``server.key`` (TLS server for a sandbox on 127.0.0.1/localhost). RSA 2048 keys, one year.
Never use these outside a test platform: the CA key sits beside the certificates (``ca.key``).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_STRUCTURE_ID = "1120459876"  # 1 + a FINESS-shaped number of the ANS examples
#: ``space.dmp.homologation_id`` for rehearsals against the sandbox (a real one comes with DMP referencing)
DEV_HOMOLOGATION_ID = "PASSERELLE-DEV-tmp"


#: The files written, by role.
FILES = {
    "ca": "ca.pem",
    "auth_cert": "auth.pem",
    "auth_key": "auth.key",
    "sign_cert": "sign.pem",
    "sign_key": "sign.key",
    "sign_p12": "sign.p12",
    "sign_password": "sign.password",
    "server_cert": "server.pem",
    "server_key": "server.key",
}


@dataclass(frozen=True)
class DevPki:
    """Paths of the files written by :func:`write_dev_pki` (see :data:`FILES`)."""

    folder: Path
    structure_id: str

    def path(self, name: str) -> Path:
        return self.folder / name

    def __getattr__(self, role: str) -> Path:
        if role in FILES:
            return self.folder / FILES[role]
        raise AttributeError(role)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, ou: str | None, org: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
           "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip


def _usage(*allowed: str) -> x509.KeyUsage:
    return x509.KeyUsage(**{name: name in allowed for name in _USAGES})


@dataclass(frozen=True)
class _Issuer:
    key: rsa.RSAPrivateKey
    name: x509.Name


def _certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: _Issuer | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
    now: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.name if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def _write_pair(folder: Path, stem: str, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)


def write_dev_pki(
    folder: Path, *, structure_id: str = DEFAULT_STRUCTURE_ID, organisation: str = "PASSERELLE TEST"
) -> DevPki:
    """Write the development PKI into ``folder`` (created) and return its paths."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = _key()
    ca_name = _name("TEST AC PASSERELLE ORGANISATIONS", "IGC-SANTE TEST", "PASSERELLE TEST")
    ca_cert = _certificate(
        ca_name,
        ca_key,
        None,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (_usage("key_cert_sign", "crl_sign"), True)],
        now,
    )
    _write_pair(folder, "ca", ca_cert, ca_key)
    issuer = _Issuer(ca_key, ca_name)
    loopback = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    # stem: (subject, key usages, extended key usage, extra extensions)
    leaves = {
        "auth": (_name(f"{organisation} AUTH_CLI", structure_id, organisation), ("digital_signature", "key_encipherment"), ExtendedKeyUsageOID.CLIENT_AUTH, []),
        "sign": (_name(f"{organisation} SIGN", structure_id, organisation), ("digital_signature", "content_commitment"), ExtendedKeyUsageOID.EMAIL_PROTECTION, []),
        "server": (_name("localhost", None, "PASSERELLE SANDBOX"), ("digital_signature", "key_encipherment"), ExtendedKeyUsageOID.SERVER_AUTH, [loopback]),
    }  # fmt: skip
    written: dict[str, tuple[x509.Certificate, rsa.RSAPrivateKey]] = {}
    for stem, (subject, usages, purpose, extra) in leaves.items():
        key = _key()
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_usage(*usages), True),
            (x509.ExtendedKeyUsage([purpose]), False),
            *((extension, False) for extension in extra),
        ]
        written[stem] = (_certificate(subject, key, issuer, extensions, now), key)
        _write_pair(folder, stem, *written[stem])
    sign, sign_key = written["sign"]
    password = secrets.token_urlsafe(18)
    (folder / "sign.password").write_text(password + "\n", encoding="utf-8")
    (folder / "sign.password").chmod(0o600)
    p12 = pkcs12.serialize_key_and_certificates(
        b"sign", sign_key, sign, [ca_cert], serialization.BestAvailableEncryption(password.encode())
    )
    (folder / "sign.p12").write_bytes(p12)
    (folder / "sign.p12").chmod(0o600)
    return DevPki(folder, structure_id)
