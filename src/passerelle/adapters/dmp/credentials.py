"""The structure's certificates: loading (PEM, or PKCS#12 with a password file), checking, TLS context.

Checks (each problem is one line naming the setting): files exist and parse; each key matches its
certificate; AUTH_CLI allows TLS client authentication (extended key usage clientAuth when present, key
usage digitalSignature); SIGN allows signing (key usage digitalSignature or nonRepudiation); the
structure id equals the OU of both certificates; an ``http://`` base only on a loopback address.

TLS toward the DMP: TLS 1.2 only, with the four ECDHE-RSA suites of the DMP's cryptographic reference
(docs/dmp-transport.md).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from passerelle.adapters.mhd import SpaceSettings

#: OpenSSL names of the suites the DMP accepts for software access (TLS 1.2).
DMP_CIPHERS = (
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)


class CredentialError(ValueError):
    """A certificate or key file is unusable; the message is one line naming the setting."""


@dataclass(frozen=True)
class SigningIdentity:
    """The SIGN key and certificate (plus any chain found in a PKCS#12 file)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def structure_id(self) -> str:
        return organisational_unit(self.certificate)

    @property
    def organisation(self) -> str:
        values = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(values[0].value) if values else ""


def organisational_unit(cert: x509.Certificate) -> str:
    """The certificate's OU (IdNat_Struct in IGC-Santé ORG certificates); the last one when several."""
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(values[-1].value) if values else ""


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"{setting}: cannot read {path} ({exc.strerror or 'error'})") from exc


def _password(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    lines = _read(path, setting).splitlines()
    return lines[0].strip() if lines else b""


def _is_pkcs12(data: bytes) -> bool:
    return not data.lstrip().startswith(b"-----")


def load_certificate(path: Path, setting: str) -> x509.Certificate:
    data = _read(path, setting)
    try:
        return x509.load_pem_x509_certificate(data) if not _is_pkcs12(data) else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CredentialError(f"{setting}: not a PEM or DER certificate") from exc


def load_private_key(path: Path, setting: str, password: bytes | None) -> rsa.RSAPrivateKey:
    data = _read(path, setting)
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"{setting}: not a readable PEM private key (wrong password?)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(f"{setting}: the DMP signatures need an RSA key")
    return key


def load_signing_identity(space: SpaceSettings) -> SigningIdentity:
    """The SIGN identity of ``space.dmp``. Raises :class:`CredentialError`."""
    dmp = space.dmp
    if dmp.sign_cert_file is None:
        raise CredentialError("space.dmp.sign_cert_file: required with space.transport dmp")
    password = _password(dmp.sign_password_file, "space.dmp.sign_password_file")
    data = _read(dmp.sign_cert_file, "space.dmp.sign_cert_file")
    if _is_pkcs12(data) and dmp.sign_key_file is None:
        return _from_pkcs12(data, password)
    if dmp.sign_key_file is None:
        raise CredentialError("space.dmp.sign_key_file: required with a PEM sign_cert_file")
    cert = load_certificate(dmp.sign_cert_file, "space.dmp.sign_cert_file")
    key = load_private_key(dmp.sign_key_file, "space.dmp.sign_key_file", password)
    return SigningIdentity(key, cert)


def _from_pkcs12(data: bytes, password: bytes | None) -> SigningIdentity:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as exc:
        raise CredentialError("space.dmp.sign_cert_file: not a readable PKCS#12 file (wrong password?)") from exc
    if cert is None or key is None:
        raise CredentialError("space.dmp.sign_cert_file: the PKCS#12 file holds no key and certificate")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError("space.dmp.sign_cert_file: the DMP signatures need an RSA key")
    return SigningIdentity(key, cert, tuple(extra))


def _pair_matches(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bool:
    public = cert.public_key()
    return isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == key.public_key().public_numbers()


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _client_auth_allowed(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def check_signing(identity: SigningIdentity, structure_id: str) -> list[str]:
    problems = []
    if not _pair_matches(identity.key, identity.certificate):
        problems.append("space.dmp.sign_key_file: the key does not match space.dmp.sign_cert_file")
    usage = _key_usage(identity.certificate)
    if usage is None or not (usage.digital_signature or usage.content_commitment):
        problems.append("space.dmp.sign_cert_file: key usage allows no signature (digitalSignature/nonRepudiation)")
    ou = identity.structure_id
    if structure_id and ou != structure_id:
        problems.append(f"space.dmp.structure_id: {structure_id} is not the SIGN certificate's OU ({ou or 'none'})")
    return problems


def check_auth(space: SpaceSettings) -> list[str]:
    """The AUTH_CLI pair of ``space.client_cert_file`` / ``space.client_key_file``."""
    if space.client_cert_file is None or space.client_key_file is None:
        if _is_loopback_http(space.url):
            return []
        return ["space.client_cert_file: the DMP needs the structure's AUTH_CLI certificate and key (mutual TLS)"]
    try:
        cert = load_certificate(space.client_cert_file, "space.client_cert_file")
        key = load_private_key(space.client_key_file, "space.client_key_file", None)
    except CredentialError as exc:
        return [str(exc)]
    problems = []
    if not _pair_matches(key, cert):
        problems.append("space.client_key_file: the key does not match space.client_cert_file")
    usage = _key_usage(cert)
    if usage is None or not usage.digital_signature or not _client_auth_allowed(cert):
        problems.append("space.client_cert_file: not a TLS client certificate (clientAuth, digitalSignature)")
    ou = organisational_unit(cert)
    if space.dmp.structure_id and ou != space.dmp.structure_id:
        problems.append(
            f"space.dmp.structure_id: {space.dmp.structure_id} is not the AUTH_CLI certificate's OU ({ou or 'none'})"
        )
    return problems


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Smallest ``space.max_response_bytes`` check-config accepts for the DMP (an ITI-18 answer lists a patient's
#: documents with their metadata, a few kilobytes each, wrapped in multipart/related).
DMP_MIN_RESPONSE_BYTES = 65_536


def check_space(space: SpaceSettings) -> list[str]:
    """Every problem of a ``space.transport: dmp`` configuration, one line each (empty: usable)."""
    problems: list[str] = []
    if urlsplit(space.url).scheme == "http" and not (space.dmp.allow_loopback_http and _is_loopback_http(space.url)):
        problems.append("space.url: the DMP services need https:// (plain http only for a sandbox on loopback)")
    if not space.dmp.structure_id:
        problems.append("space.dmp.structure_id: required with space.transport dmp (IdNat_Struct)")
    if not space.dmp.homologation_id:
        problems.append(
            "space.dmp.homologation_id: required with space.transport dmp (LPS_ID_HOMOLOGATION_DMP of every VIHF)"
        )
    if space.ca_file is not None and not space.ca_file.is_file():
        problems.append("space.ca_file: file not found")
    if space.max_response_bytes < DMP_MIN_RESPONSE_BYTES:
        problems.append(
            f"space.max_response_bytes: {space.max_response_bytes} bytes would cut the DMP's answers "
            f"(an ITI-18 listing a patient's documents, in multipart/related); at least {DMP_MIN_RESPONSE_BYTES}"
        )
    problems.extend(check_auth(space))
    try:
        identity = load_signing_identity(space)
    except CredentialError as exc:
        problems.append(str(exc))
    else:
        problems.extend(check_signing(identity, space.dmp.structure_id))
    return problems


def tls_context(space: SpaceSettings) -> ssl.SSLContext | bool:
    """TLS 1.2 with the DMP's suites and the AUTH_CLI certificate; ``False`` for a loopback ``http://``
    sandbox (no TLS). Raises :class:`CredentialError` when the files cannot be loaded."""
    if urlsplit(space.url).scheme == "http":
        return False
    try:
        context = ssl.create_default_context(cafile=str(space.ca_file) if space.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(DMP_CIPHERS)
        if space.client_cert_file is not None and space.client_key_file is not None:
            context.load_cert_chain(str(space.client_cert_file), str(space.client_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise CredentialError(f"space.client_cert_file: cannot load the TLS files ({exc})") from exc
    return context
