"""TLS for the MLLP listener: the server context, the client-certificate allow-list, and the sender
bindings (which MSH-3^MSH-4 senders each client certificate may speak for; ADR 0024)."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from passerelle.connector.intake.binding import Principal
from passerelle.connector.listeners.mllp.settings import MllpTlsSettings, fingerprint_key
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


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A verified client certificate: subject CN, subject DN (RFC 4514 order), SHA-256 of the DER."""

    cn: str
    dn: str
    fingerprint: str

    @property
    def label(self) -> str:
        """PHI-free name for logs and the audit trail: the CN, else a fingerprint prefix."""
        return self.cn or f"sha256:{self.fingerprint[:16]}"

    @classmethod
    def of(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> ClientIdentity:
        """The peer's certificate, or :class:`ClientCertificateError` when it sent none."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise ClientCertificateError("no client certificate")
        decoded = ssl_object.getpeercert() if ssl_object is not None else None
        rdns = _subject_rdns(decoded)
        cn = next((v for k, v in rdns if k == "CN"), "")
        dn = ",".join(f"{k}={v}" for k, v in reversed(rdns))
        return cls(cn, dn, hashlib.sha256(der).hexdigest())

    def matches(self, subjects: Container[str]) -> list[str]:
        """The normalised subjects (CN or full DN) of ``subjects`` naming this certificate."""
        keys = [_norm_dn(self.cn)] if self.cn else []
        keys.append(_norm_dn(self.dn))
        return [k for k in keys if k in subjects]


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

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> ClientIdentity:
        """Return the peer's verified certificate identity or raise :class:`ClientCertificateError`."""
        identity = ClientIdentity.of(ssl_object)
        if self.allow_any or identity.fingerprint in self.fingerprints or identity.matches(self.subjects):
            return identity
        raise ClientCertificateError(f"client certificate not allowed on this listener ({identity.label})")


@dataclass(frozen=True)
class SenderBindings:
    """``mllp.tls.bindings``: which senders (``MSH-3.1^MSH-4.1`` patterns) each client certificate may
    speak for. A certificate is named as in the allow-list: CN, full DN, or SHA-256 fingerprint; when
    several entries name it, it may use the senders of all of them. A certificate no entry names gets a
    principal with no sender (every message refused): once bindings are set, the listener fails closed.
    """

    subjects: Mapping[str, frozenset[str]]
    fingerprints: Mapping[str, frozenset[str]]

    @classmethod
    def from_settings(cls, settings: MllpTlsSettings) -> SenderBindings | None:
        """``None`` when no binding is configured (the listener then binds nothing)."""
        if not settings.bindings:
            return None
        subjects: dict[str, frozenset[str]] = {}
        fingerprints: dict[str, frozenset[str]] = {}
        for key, senders in settings.bindings.items():
            fp = fingerprint_key(key)
            table, name = (fingerprints, fp) if fp else (subjects, _norm_dn(key))
            table[name] = table.get(name, frozenset()) | frozenset(senders)
        return cls(subjects, fingerprints)

    def principal(self, identity: ClientIdentity) -> Principal:
        senders = set(self.fingerprints.get(identity.fingerprint, ()))
        for key in identity.matches(self.subjects):
            senders |= self.subjects[key]
        return Principal.of(f"cert:{identity.label}", senders)


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
