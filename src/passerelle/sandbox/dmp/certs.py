"""The sandbox's test PKI: is a certificate issued by the configured CA, valid now, fit for signing?"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from passerelle.sandbox.dmp.common import sender

CERT_ERROR = "DMPInvalidCertificate"


def load_cas(path: Path | None) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; an unreadable or empty file fails at start-up."""
    if path is None:
        return []
    cas = x509.load_pem_x509_certificates(path.read_bytes())
    if not cas:
        raise ValueError(f"dmp_ca_file {path} holds no certificate")
    return cas


def from_base64(text: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise sender(CERT_ERROR, "the KeyInfo certificate cannot be read") from exc


def check_signing_cert(cert: x509.Certificate, cas: list[x509.Certificate], what: str) -> None:
    """Issued by one of ``cas``, within its validity, with digitalSignature and nonRepudiation.

    An authentication (AUTH_CLI-like) certificate lacks nonRepudiation and is refused, as the
    platform refuses a VIHF signed with the TLS certificate.
    """
    if not any(_issued_by(cert, ca) for ca in cas):
        raise sender(CERT_ERROR, f"the {what} certificate is not issued by the sandbox's test CA")
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise sender(CERT_ERROR, f"the {what} certificate is outside its validity period")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise sender(CERT_ERROR, f"the {what} certificate has no key usage") from exc
    if not (usage.digital_signature and usage.content_commitment):
        raise sender(CERT_ERROR, f"the {what} certificate is not a signature certificate (key usage)")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def structure_id(cert: x509.Certificate) -> str | None:
    """The IdNat_Struct an IGC-Santé organisation certificate carries in its subject ``OU``."""
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else None


_ALIASES = {"S": "ST", "G": "GIVENNAME", "GN": "GIVENNAME", "E": "EMAILADDRESS"}


def dn_matches(text: str, name: x509.Name) -> bool:
    """Compare an RFC 4514-like DN string with a certificate name, in any RDN order.

    Senders write the issuer DN with ``, `` or ``,`` and in either order (docs/sandbox.md).
    """

    def pairs(value: str) -> set[tuple[str, str]]:
        result = set()
        for part in value.replace("\\,", "\x00").split(","):
            key, _, val = part.strip().partition("=")
            key = key.strip().upper()
            result.add((_ALIASES.get(key, key), val.strip().replace("\x00", ",")))
        return result

    return pairs(text) == pairs(name.rfc4514_string()) and bool(text.strip())
