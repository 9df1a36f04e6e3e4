"""TLS for the MLLP listener: the server context and the client-certificate allow-list."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from passerelle.connector.listeners.mllp.settings import MllpTlsSettings
from passerelle.errors import PermanentError


class ClientCertificateError(PermanentError):
    """The peer's certificate is missing or not on this listener's allow-list."""

    reason = "client_cert"


def server_context(settings: MllpTlsSettings) -> ssl.SSLContext:
    """An SSL context for the listener (TLS >= 1.2; client certificate required in mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if settings.minimum_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    assert settings.cert_file is not None and settings.key_file is not None  # checked by the settings
    password = None
    if settings.key_password_file is not None:
        password = settings.key_password_file.read_text(encoding="utf-8").strip()
    ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file), password=password)
    if settings.require_client_cert:
        assert settings.client_ca_file is not None
        ctx.load_verify_locations(cafile=str(settings.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True)
class ClientAllowList:
    """Which verified client certificates may talk to this listener.

    A certificate passes when its SHA-256 fingerprint is listed, or its subject CN or full DN
    (RFC 4514 order, e.g. ``CN=lis.example.fr,O=Labo,C=FR``) is listed, or ``allow_any`` is set.
    """

    subjects: frozenset[str] = field(default_factory=frozenset)
    fingerprints: frozenset[str] = field(default_factory=frozenset)
    allow_any: bool = False

    @classmethod
    def from_settings(cls, settings: MllpTlsSettings) -> ClientAllowList:
        return cls(
            subjects=frozenset(_norm_dn(s) for s in settings.allowed_client_subjects),
            fingerprints=frozenset(settings.allowed_client_fingerprints),
            allow_any=settings.allow_any_client_cert_from_ca,
        )

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
        """Return a PHI-free identity of the peer (``CN`` or fingerprint prefix) or raise
        :class:`ClientCertificateError`."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise ClientCertificateError("no client certificate")
        fingerprint = hashlib.sha256(der).hexdigest()
        decoded = ssl_object.getpeercert() if ssl_object is not None else None
        rdns = _subject_rdns(decoded)
        cn = next((v for k, v in rdns if k == "CN"), "")
        dn = ",".join(f"{k}={v}" for k, v in reversed(rdns))
        identity = cn or f"sha256:{fingerprint[:16]}"
        if self.allow_any or fingerprint in self.fingerprints:
            return identity
        if (cn and _norm_dn(cn) in self.subjects) or _norm_dn(dn) in self.subjects:
            return identity
        raise ClientCertificateError(f"client certificate not allowed on this listener ({identity})")


_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "emailAddress": "EMAILADDRESS",
    "serialNumber": "SERIALNUMBER",
}


def _subject_rdns(cert: Any) -> list[tuple[str, str]]:
    """The subject as ``[(short name, value), ...]`` in certificate order (most general first)."""
    if not isinstance(cert, dict):
        return []
    out: list[tuple[str, str]] = []
    subject: Iterable[Iterable[tuple[str, str]]] = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            out.append((_SHORT.get(key, key), value))
    return out


def _norm_dn(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    norm = []
    for part in parts:
        key, sep, val = part.partition("=")
        norm.append(f"{key.strip().upper()}={val.strip()}" if sep else part)
    return ",".join(norm)
