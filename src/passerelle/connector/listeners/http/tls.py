"""HTTPS for the HTTP listener: the server context, and the client certificate handed to the routes.

:func:`server_context` builds a TLS 1.2+ server context from ``http.tls`` (no compression, Python's
default cipher suites, which exclude the weak ones). With ``client_ca_file`` clients are asked for a
certificate issued by that CA: required (mutual TLS) or, with ``require_client_cert: false``, verified
when presented.

:class:`TlsH11Protocol` is uvicorn's h11 protocol plus the ASGI TLS extension
(https://asgi.readthedocs.io/en/latest/specs/tls.html) in each request's scope:
``scope["extensions"]["tls"]`` holds ``client_cert_chain`` (the verified client certificate, PEM),
``client_cert_name`` (its subject, RFC 4514), ``client_cert_error``, ``tls_version`` and ``server_cert``,
so a route can tell which partner is calling without knowing anything about sockets.
"""

from __future__ import annotations

import ssl
from typing import Any

from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from passerelle.config.settings import HttpTlsSettings

#: ASGI's ``tls_version`` values (the TLS protocol version numbers).
_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(settings: HttpTlsSettings) -> ssl.SSLContext:
    """The listener's context. Raises ``OSError`` (``ssl.SSLError`` included) for unreadable files, a
    key that does not match its certificate, or a wrong passphrase."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if settings.minimum_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    password = None
    if settings.key_password_file is not None:
        password = settings.key_password_file.read_text(encoding="utf-8").strip()
    ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file), password=password)
    if settings.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(settings.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def tls_extension(ssl_object: ssl.SSLObject | None) -> dict[str, Any] | None:
    """The ASGI TLS extension for one connection (None for plain HTTP)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name = None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,  # an unverifiable certificate never gets this far: the handshake failed
        "tls_version": _VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,  # Python exposes the suite's name, not its IANA number
    }


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the ASGI TLS extension in every HTTP request's scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and self.transport is not None:
                tls = tls_extension(self.transport.get_extra_info("ssl_object"))
                if tls is not None:
                    scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await inner(scope, receive, send)

        self.app = app_with_tls
