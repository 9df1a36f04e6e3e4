"""The client certificate of a TLS connection, handed to the application in the ASGI scope.

uvicorn does not put the peer certificate in the scope; :class:`TlsScopeProtocol` (uvicorn's h11
protocol, ``uvicorn.Config(http=TlsScopeProtocol)``) fills the ASGI TLS extension,
``scope["extensions"]["tls"]``, once per connection: ``client_cert_name`` (the subject DN in RFC 4514
order, most specific first, or None), ``client_cert_chain`` (the peer certificate as PEM),
``tls_version``. :func:`passerelle.connector.listeners.http.auth.peer_subject` reads it. Over plain
HTTP nothing is added, so no request can claim a certificate identity without a TLS handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from passerelle.connector.listeners.mllp.tls import _subject_rdns

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (None when it is not TLS)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    rdns = _subject_rdns(ssl_object.getpeercert()) if der else []
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": ",".join(f"{k}={v}" for k, v in reversed(rdns)) or None,
        "client_cert_error": None,  # the handshake refused any certificate that did not verify
        "tls_version": ssl_object.version(),
        "cipher_suite": None,
    }


class _WithTls:
    """The application, with the connection's TLS extension added to each request's scope."""

    def __init__(self, app: Asgi, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        scope.setdefault("extensions", {})["tls"] = dict(self.tls)
        await self.app(scope, receive, send)


class TlsScopeProtocol(H11Protocol):
    """uvicorn's h11 protocol, filling ``scope["extensions"]["tls"]`` on TLS connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        super().connection_made(transport)
        tls = tls_extension(transport)
        if tls is not None:
            self.app = _WithTls(self.app, tls)
