"""The HTTP client both patient-space transports use: timeouts, pool size and redirect policy from
``space.*``, no proxy from the environment (``trust_env=False``), TLS as the transport decides.

The network side is :class:`~passerelle.adapters.http_pool.PooledTransport` (HTTP/1.1 keep-alive
connections, at most ``space.max_connections`` requests in flight); unit tests pass their own
transport (``httpx.MockTransport``).

:func:`fetch` is the one exchange both transports make: one request, the answer read in chunks up to
``space.max_response_bytes`` (a declared ``Content-Length`` over the cap is refused before any byte of the
body, a streamed body is cut as soon as it passes the cap and its connection closed), under the total
deadline; every failure becomes the port's error (:class:`~passerelle.errors.RemoteTransientError`;
:class:`~passerelle.errors.RemoteUntrustedCertificateError` when the server's certificate is not trusted;
:class:`~passerelle.errors.RemoteCredentialError` when the server refused our client certificate with a
TLS alert). The caller classifies the status and the body.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from passerelle.adapters.http_pool import PooledTransport
from passerelle.errors import RemoteCredentialError, RemoteTransientError, RemoteUntrustedCertificateError

log = logging.getLogger(__name__)

#: Pool size of a client built outside the gateway (CLI tools) when ``space.max_connections`` is unset.
DEFAULT_MAX_CONNECTIONS = 10

#: Longest ``Retry-After`` honoured; a larger hint is clamped (the worker's own deadline still applies).
MAX_RETRY_AFTER = 24 * 3600.0

#: The TLS alerts a server sends about the client certificate it received (or did not receive), by the
#: OpenSSL reason of the ``ssl.SSLError`` they raise on our side. "decrypt error" is what OpenSSL sends
#: when our certificate's signature does not verify against the CA it trusts under the issuer's name (a
#: CA of the same name with another key); the server checks no other signature of ours but the handshake
#: itself. TLS 1.2 has no alert for "no certificate" (RFC 5246 7.4.6: handshake_failure, the alert of a
#: cipher mismatch too), so that one is not here (docs/adr/0028-dmp-answers-from-a-real-platform.md).
CLIENT_CERTIFICATE_ALERTS = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate unknown",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown CA",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt error",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate required",
}


class HttpLimits(Protocol):
    """The ``space.*`` limits the client needs (``SpaceSettings`` fits)."""

    @property
    def connect_timeout_s(self) -> float: ...
    @property
    def read_timeout_s(self) -> float: ...
    @property
    def write_timeout_s(self) -> float: ...
    @property
    def pool_timeout_s(self) -> float: ...
    @property
    def max_connections(self) -> int | None: ...


def space_timeouts(settings: HttpLimits) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.write_timeout_s,
        pool=settings.pool_timeout_s,
    )


def space_transport(
    settings: HttpLimits, *, verify: ssl.SSLContext | bool, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncBaseTransport:
    """``transport`` (a test's), or the pooled HTTP/1.1 transport sized by ``space.max_connections``;
    ``verify`` is its TLS context, or True for the system's default one."""
    if transport is not None:
        return transport
    context = verify if isinstance(verify, ssl.SSLContext) else None
    return PooledTransport(ssl_context=context, max_connections=settings.max_connections or DEFAULT_MAX_CONNECTIONS)


def space_http_client(
    settings: HttpLimits,
    *,
    verify: ssl.SSLContext | bool,
    transport: httpx.AsyncBaseTransport | None,
    headers: Mapping[str, str],
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=space_timeouts(settings),
        follow_redirects=False,
        transport=space_transport(settings, verify=verify, transport=transport),
        headers=dict(headers),
        trust_env=False,
    )


#: Sends one request and returns its answer with the body not read yet (``client.send(r, stream=True)``,
#: or a transport's ``handle_async_request``).
Send = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Fetched:
    """An answer read whole (within the cap)."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def media_type(self) -> str:
        """The Content-Type without its parameters, lower case ("" when absent)."""
        value: str = self.headers.get("Content-Type", "")
        return value.split(";", 1)[0].strip().lower()


async def fetch(send: Send, request: httpx.Request, *, max_bytes: int, total_timeout_s: float, label: str) -> Fetched:
    """Send ``request`` once and read its answer (module docstring). ``label`` starts every error text
    (the transaction, or "patient space"). Raises :class:`RemoteTransientError` (timeouts, transport
    errors, an answer over ``max_bytes``) or :class:`RemoteUntrustedCertificateError`."""
    try:
        async with asyncio.timeout(total_timeout_s):
            response = await send(request)
            try:
                body = await _read_capped(response, max_bytes, label)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise RemoteTransientError(f"{label}: no complete answer within {total_timeout_s:g} s") from exc
    except httpx.TimeoutException as exc:
        raise RemoteTransientError(f"{label}: timeout ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise transport_failure(label, exc) from exc
    return Fetched(response.status_code, response.headers, body)


async def _read_capped(response: httpx.Response, max_bytes: int, label: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _oversized(label, max_bytes, response.status_code)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise _oversized(label, max_bytes, response.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


def _oversized(label: str, max_bytes: int, status: int) -> RemoteTransientError:
    log.error("%s: answer over the space.max_response_bytes cap (%d bytes), cut", label, max_bytes)
    return RemoteTransientError(
        f"{label}: answer larger than the space.max_response_bytes cap ({max_bytes} bytes), cut", status=status
    )


def retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or HTTP-date), clamped to [0, 24 h]; None
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, said to be of unknown origin (RFC 5322)
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def transport_failure(label: str, exc: httpx.TransportError) -> RemoteTransientError:
    """The port's error for a failed exchange: an untrusted server certificate (an operator must fix the
    trust store or the URL) and our client certificate refused by the server (an operator must renew or
    fix it) apart, any other transport error as a transient failure."""
    verification = _ssl_cause(exc, lambda e: isinstance(e, ssl.SSLCertVerificationError))
    if isinstance(verification, ssl.SSLCertVerificationError):
        why = verification.verify_message or "certificate verification failed"
        log.error("%s: the server's certificate is not trusted (%s); check space.ca_file and space.url", label, why)
        return RemoteUntrustedCertificateError(
            f"{label}: the server's certificate is not trusted by space.ca_file ({why}); nothing was sent"
        )
    refused = _ssl_cause(exc, lambda e: e.reason in CLIENT_CERTIFICATE_ALERTS)
    if refused is not None:
        alert = CLIENT_CERTIFICATE_ALERTS[str(refused.reason)]
        log.error(
            "%s: the server refused our client certificate (TLS alert: %s); check space.client_cert_file", label, alert
        )
        return RemoteCredentialError(
            f"{label}: the server refused the client certificate (TLS alert: {alert}); check "
            "space.client_cert_file (expiry, revocation, issuing CA) with the space's operator; no request reached the service"
        )
    if _ssl_cause(exc, lambda e: e.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE") is not None:
        log.warning("%s: the server ended the TLS handshake (TLS alert: handshake failure)", label)
        return RemoteTransientError(
            f"{label}: the server ended the TLS handshake (TLS alert: handshake failure): no TLS version or cipher "
            "suite in common, or (TLS 1.2) it requires a client certificate and none was sent (space.client_cert_file)"
        )
    return RemoteTransientError(f"{label}: transport error ({type(exc).__name__})")


def _ssl_cause(exc: BaseException, matches: Callable[[ssl.SSLError], bool]) -> ssl.SSLError | None:
    """The first ``ssl.SSLError`` behind ``exc`` (itself, then its chain of causes) that ``matches``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError) and matches(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
