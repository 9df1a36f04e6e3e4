"""Refused TLS handshakes on the MLLP listener: their class, and an audit trail a scanner cannot flood.

:func:`classify` names why a handshake failed (:data:`CLASSES`); ``None`` when the peer went away
without a TLS error (a TCP connect then close, a load balancer's probe): such a connection is counted,
never audited. :class:`TlsRefusals` writes refusals to the audit trail (action ``admin``, outcome
``failure``, reason ``tls-refused``, actor ``mllp:<address>``), coalesced per address, class and minute:
the first refusal of a minute is recorded at once, the total of the minute when the minute is over
(``count=N``, only when more came). At most :data:`MAX_ADDRESSES` addresses are tracked per minute; the
others share one actor, ``mllp:other-addresses``. A presented certificate is named by its SHA-256
fingerprint, never its subject (a subject can carry a person's name).

Python 3.11's ``ssl`` does not hand out the certificate of a handshake that failed its verification
(``get_unverified_chain`` comes with 3.13): an untrusted or expired certificate is recorded without its
fingerprint; a verified certificate refused by the allow-list (``not_allowed``) with it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from passerelle.observability.audit import AuditTrail

log = logging.getLogger("passerelle.connector.listeners.mllp")

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
#: Most addresses tracked per minute; refusals from more share :data:`OTHER_ADDRESSES`.
MAX_ADDRESSES = 64
OTHER_ADDRESSES = "mllp:other-addresses"

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


@dataclass
class _Bucket:
    minute: int
    count: int = 0


class TlsRefusals:
    """The audit side of refused handshakes, coalesced (see the module). ``clock`` gives seconds since
    the epoch (the minute buckets); :meth:`flush` writes the totals of the minutes that are over."""

    def __init__(
        self, audit: AuditTrail, *, clock: Callable[[], float] = time.time, max_addresses: int = MAX_ADDRESSES
    ) -> None:
        self.audit, self.clock, self.max_addresses = audit, clock, max_addresses
        self._buckets: dict[tuple[str, str, str, int], _Bucket] = {}

    async def refused(self, address: str, cls: str, fingerprint: str = "") -> None:
        """One refused handshake from ``address``: recorded when it opens its minute, else counted."""
        minute = int(self.clock() // 60)
        await self.flush(before=minute)
        key = (self._actor(address, minute), cls, fingerprint, minute)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(minute)
            bucket.count = 1
            await self._write(key, "first")
            return
        bucket.count += 1

    async def flush(self, before: int | None = None) -> None:
        """Write the total of every minute before ``before`` (all of them when ``None``) that had more
        than its first refusal, and forget those minutes."""
        done = [k for k in self._buckets if before is None or k[3] < before]
        for key in done:
            bucket = self._buckets.pop(key)
            if bucket.count > 1:
                await self._write(key, f"count={bucket.count}")

    async def run(self) -> None:
        """Flush each minute once it is over, until cancelled (the listener's background task)."""
        while True:
            await asyncio.sleep(61 - self.clock() % 60)
            await self.flush(before=int(self.clock() // 60))

    def _actor(self, address: str, minute: int) -> str:
        actor = f"mllp:{address}"
        tracked = {k[0] for k in self._buckets if k[3] == minute}
        if actor in tracked or len(tracked - {OTHER_ADDRESSES}) < self.max_addresses:
            return actor
        return OTHER_ADDRESSES

    async def _write(self, key: tuple[str, str, str, int], what: str) -> None:
        actor, cls, fingerprint, minute = key
        at = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")
        detail = f"{cls} {what} in minute {at}" + (f" sha256={fingerprint}" if fingerprint else "")
        try:
            await self.audit.record(action="admin", outcome="failure", reason="tls-refused", actor=actor, detail=detail)
        except Exception:  # noqa: BLE001 - the audit store failing must not break the listener
            log.warning("mllp TLS refusal from %s (%s) not recorded in the audit trail", actor, cls)
