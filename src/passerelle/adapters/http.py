"""The HTTP client both patient-space transports use: timeouts, pool size and redirect policy from
``space.*``, no proxy from the environment (``trust_env=False``), TLS as the transport decides.

The network side is :class:`~passerelle.adapters.http_pool.PooledTransport` (HTTP/1.1 keep-alive
connections, at most ``space.max_connections`` requests in flight); unit tests pass their own
transport (``httpx.MockTransport``).

:func:`fetch` is the one exchange both transports make: one request, the answer read in chunks up to
``space.max_response_bytes`` (a declared ``Content-Length`` over the cap is refused before any byte of the
body, a streamed body is cut as soon as it passes the cap and its connection closed), under the total
deadline; every failure becomes the port's error (:class:`~passerelle.errors.RemoteTransientError`, or
:class:`~passerelle.errors.RemoteUntrustedCertificateError` when the server's certificate is not trusted).
The caller classifies the status and the body.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from passerelle.adapters.http_pool import PooledTransport
from passerelle.errors import RemoteTransientError, RemoteUntrustedCertificateError

log = logging.getLogger(__name__)

#: Pool size of a client built outside the gateway (CLI tools) when ``space.max_connections`` is unset.
DEFAULT_MAX_CONNECTIONS = 10


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


def transport_failure(label: str, exc: httpx.TransportError) -> RemoteTransientError:
    """The port's error for a failed exchange: an untrusted server certificate apart (an operator must
    fix the trust store or the URL), any other transport error as a transient failure."""
    verification = _certificate_verification(exc)
    if verification is None:
        return RemoteTransientError(f"{label}: transport error ({type(exc).__name__})")
    why = verification.verify_message or "certificate verification failed"
    log.error("%s: the server's certificate is not trusted (%s); check space.ca_file and space.url", label, why)
    return RemoteUntrustedCertificateError(
        f"{label}: the server's certificate is not trusted by space.ca_file ({why}); nothing was sent"
    )


def _certificate_verification(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc`` (its chain of causes), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
