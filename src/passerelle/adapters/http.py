"""The HTTP client both patient-space transports use: timeouts, pool size and redirect policy from
``space.*``, no proxy from the environment (``trust_env=False``), TLS as the transport decides.

The network side is :class:`~passerelle.adapters.http_pool.PooledTransport` (HTTP/1.1 keep-alive
connections, at most ``space.max_connections`` requests in flight); unit tests pass their own
transport (``httpx.MockTransport``).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Protocol

import httpx

from passerelle.adapters.http_pool import PooledTransport

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
