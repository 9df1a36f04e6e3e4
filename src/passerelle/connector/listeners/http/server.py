"""uvicorn as one listener of the gateway.

The socket is bound by :meth:`HttpListener.start` itself, so a busy or forbidden port fails the start
with an ``OSError`` the supervisor reports in one line (uvicorn would ``sys.exit``). uvicorn runs with
no lifespan (the composition root starts and stops everything) and installs no signal handler (the
composition root owns the signals); :meth:`HttpListener.stop` lets requests in flight finish, bounded.

With ``http.tls`` the listener serves HTTPS only (TLS 1.2+, :mod:`.tls`); the certificate and key are
loaded by :meth:`HttpListener.start`, so an unreadable or mismatched pair fails the start in one line.
Whether plain HTTP may be served on this address is decided where the listener is built
(:func:`passerelle.connector.listeners.exposure.guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence

import uvicorn
from fastapi import FastAPI

from passerelle.config.settings import HttpTlsSettings
from passerelle.connector.listeners.http.tls import TlsH11Protocol, server_context

log = logging.getLogger(__name__)

#: Longest wait for requests in flight at stop.
GRACEFUL_S = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the composition root owns SIGTERM/SIGINT


class HttpListener:
    """Serves ``app`` on ``host:port`` (0: any free port, see :attr:`port`), over HTTPS when ``tls`` is
    given. Idempotent start/stop."""

    def __init__(self, app: FastAPI, host: str, port: int, tls: HttpTlsSettings | None = None) -> None:
        self.app = app
        self.host = host
        self.tls = tls
        self._port = port
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("HTTP listener not started")
        return int(self._sock.getsockname()[1])

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def start(self) -> None:
        if self._server is not None:
            return
        context = server_context(self.tls) if self.tls is not None else None
        self._sock = _listen(self.host, self._port)
        # proxy_headers off: uvicorn otherwise takes X-Forwarded-For from 127.0.0.1 as the client's address,
        # so a local process could choose the address the audit trail records and the login throttle counts
        config = uvicorn.Config(self.app, self.host, self.port, log_config=None, access_log=False, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=GRACEFUL_S, http=TlsH11Protocol,
                                proxy_headers=False,
                                ssl_context_factory=_fixed(context) if context is not None else None)  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="http")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn exposes a flag
            await asyncio.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the HTTP server did not start")
        log.info("%s listening on %s:%d", self.scheme, self.host, self.port)

    async def stop(self) -> None:
        server, task, sock = self._server, self._task, self._sock
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), GRACEFUL_S + 5)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if sock is not None:
            sock.close()
            self._sock = None


def _fixed(context: ssl.SSLContext) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    """uvicorn's ``ssl_context_factory`` answering our own context (its default one is not used)."""
    return lambda _config, _default: context


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a failure names the address (``Address already in use
    (127.0.0.1:8080)``) and leaves nothing open."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{exc.strerror} ({host}:{port})") from None
    return sock
