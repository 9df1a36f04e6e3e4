"""Refused TLS handshakes and connections on the MLLP listener: their class, and an audit trail a scanner
cannot flood.

:func:`classify` names why a handshake failed (:data:`CLASSES`); ``None`` when the peer went away
without a TLS error (a TCP connect then close, a load balancer's probe): such a connection is counted,
never audited. :class:`TlsRefusals` writes refusals to the audit trail (action ``admin``, outcome
``failure``, reason ``tls-refused``, actor ``mllp:<address>``) through the gateway's
:class:`~passerelle.observability.refusals.RefusalLog`, coalesced per address, class and minute:
the first refusal of a minute is recorded at once, the total of the minute when the minute is over
(``count=N``, only when more came). At most :data:`MAX_ADDRESSES` addresses are tracked per minute; the
others share one actor, ``mllp:other-addresses``. A presented certificate is named by its SHA-256
fingerprint, never its subject (a subject can carry a person's name).

Python 3.11's ``ssl`` does not hand out the certificate of a handshake that failed its verification
(``get_unverified_chain`` comes with 3.13): an untrusted or expired certificate is recorded without its
fingerprint; a verified certificate refused by the allow-list (``not_allowed``) with it.

Connections refused before any handshake (ADR 0031) — a source outside ``allowed_networks``, a source at
``max_connections_per_source``, a full table with no idle connection to close — are audited the same
way with reason ``connection-refused`` and the classes of :data:`CONNECTION_CLASSES`; those refused
because the gateway is stopping are not.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

from passerelle.observability.audit import AuditTrail
from passerelle.observability.refusals import MAX_ADDRESSES, RefusalLog, Surface, other_addresses

#: The classes of a refused handshake (the ``tls_<class>`` refusal reasons of the metrics).
CLASSES = (
    "not_tls",
    "protocol_version",
    "no_certificate",
    "certificate_untrusted",
    "certificate_expired",
    "timeout",
    "handshake",
    "not_allowed",
)
#: The MLLP listener's refused handshakes in the audit trail (actor ``mllp:<address>``).
SURFACE = Surface("mllp", reason="tls-refused")
#: The audit classes of the connections refused before any handshake, by their metric refusal reason.
CONNECTION_CLASSES = {
    "not_allowed": "address_not_allowed",
    "max_per_source": "too_many_from_source",
    "max_connections": "too_many_connections",
}
#: The MLLP listener's refused connections in the audit trail (actor ``mllp:<address>``).
CONNECTION_SURFACE = Surface("mllp", reason="connection-refused")
#: The actor of the refusals past :data:`MAX_ADDRESSES` addresses in a minute.
OTHER_ADDRESSES = other_addresses(SURFACE)

# OpenSSL reason codes (ssl.SSLError.reason): bytes that are not a TLS record, an old protocol version.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                      "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH"})  # fmt: skip
_OLD_VERSION = frozenset({"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "VERSION_TOO_LOW",
                          "NO_PROTOCOLS_AVAILABLE", "WRONG_SSL_VERSION"})  # fmt: skip
_NO_CERTIFICATE = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED"})
# X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED: outside its validity period.
_OUT_OF_VALIDITY = frozenset({9, 10})


def classify(exc: BaseException) -> str | None:
    """The class of a failed handshake (:data:`CLASSES`), ``None`` when the peer just went away."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate_expired" if exc.verify_code in _OUT_OF_VALIDITY else "certificate_untrusted"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return None
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NOT_TLS:
            return "not_tls"
        if reason in _OLD_VERSION:
            return "protocol_version"
        if reason in _NO_CERTIFICATE:
            return "no_certificate"
        return "handshake"
    return None  # reset, closed, aborted before any TLS error


class TlsRefusals:
    """The audit side of refused handshakes and connections: the MLLP surfaces of a coalescing
    :class:`~passerelle.observability.refusals.RefusalLog` (its own, or the gateway's one)."""

    def __init__(
        self,
        audit: AuditTrail | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_addresses: int = MAX_ADDRESSES,
        log: RefusalLog | None = None,
    ) -> None:
        if log is None:
            if audit is None:
                raise ValueError("an audit trail or a refusal log is needed")
            log = RefusalLog(audit, clock=clock, max_addresses=max_addresses)
        self.log = log

    async def refused(self, address: str, cls: str, fingerprint: str = "") -> None:
        """One refused handshake from ``address``: recorded when it opens its minute, else counted."""
        await self.log.refused(SURFACE, address, cls, tag=f"sha256={fingerprint}" if fingerprint else "")

    async def connection_refused(self, address: str, reason: str) -> None:
        """One connection from ``address`` refused before any handshake for ``reason`` (the metric's):
        audited when its class is in :data:`CONNECTION_CLASSES`, coalesced like the handshakes."""
        cls = CONNECTION_CLASSES.get(reason)
        if cls is not None:
            await self.log.refused(CONNECTION_SURFACE, address, cls)

    async def flush(self, before: int | None = None) -> None:
        await self.log.flush(before)
