"""The HTTP client both patient-space transports use: timeouts, pool size and redirect policy from
``space.*``, no proxy from the environment (``trust_env=False``), TLS as the transport decides."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Protocol

import httpx


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
    def max_connections(self) -> int: ...


def space_http_client(
    settings: HttpLimits,
    *,
    verify: ssl.SSLContext | bool,
    transport: httpx.AsyncBaseTransport | None,
    headers: Mapping[str, str],
) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.write_timeout_s,
        pool=settings.pool_timeout_s,
    )
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        verify=verify,
        limits=httpx.Limits(max_connections=settings.max_connections),
        transport=transport,
        headers=dict(headers),
        trust_env=False,
    )
