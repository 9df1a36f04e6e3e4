"""Running the sandbox under uvicorn, with a protocol that can reset a connection on purpose."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from passerelle.sandbox.app import create_app
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.dmp.routes import TLS_PEER_EXTENSION
from passerelle.sandbox.faults import ABORT_EXTENSION


class ResettableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus an ``abort`` callable in each request's ASGI scope extensions.

    ``abort()`` sets ``SO_LINGER`` to (on, 0 s) and aborts the transport, so the kernel sends a TCP
    RST instead of a FIN: the client sees a connection reset, not a clean close. Over TLS the client
    certificate (DER) is put under ``TLS_PEER_EXTENSION`` for the DMP services' checks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app_with_abort(scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http":
                extensions = dict(scope.get("extensions") or {})
                extensions[ABORT_EXTENSION] = {"abort": self.abort_with_reset}
                extensions[TLS_PEER_EXTENSION] = self.peer_certificate()
                scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app_with_abort

    def peer_certificate(self) -> bytes | None:
        ssl_object = self.transport.get_extra_info("ssl_object") if self.transport is not None else None
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def abort_with_reset(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def uvicorn_config(config: SandboxConfig, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the sandbox runs with (asyncio loop, resettable h11 protocol)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": ResettableH11Protocol,
        "loop": "asyncio",
        "lifespan": "on",
        "log_level": "warning",
        # logging belongs to the host process (no dictConfig from uvicorn); no access log: its lines
        # would carry query strings such as patient.identifier=<INS>
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
    }
    if config.tls_cert_file is not None:
        # TLS 1.2 minimum is uvicorn's default context (PROTOCOL_TLS_SERVER); client certs when a CA is given
        options["ssl_certfile"] = str(config.tls_cert_file)
        options["ssl_keyfile"] = str(config.tls_key_file)
        if config.tls_client_ca_file is not None:
            options["ssl_ca_certs"] = str(config.tls_client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    options.update(overrides)
    return uvicorn.Config(create_app(config), **options)


async def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve the sandbox until the task is cancelled or uvicorn receives a signal."""
    server = uvicorn.Server(uvicorn_config(config, host, port))
    await server.serve()


def run_sandbox(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8090) -> None:
    """Blocking entry point for the CLI (``passerelle sandbox``): runs until SIGINT/SIGTERM.

    The process's garbage collector runs its young generation every 50,000 net allocations instead
    of 700: validating a bundle allocates many short-lived objects, nearly all freed by reference
    counting, and the frequent collections were a sizeable part of each push's cost (docs/sandbox.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    asyncio.run(serve(config, host, port))
