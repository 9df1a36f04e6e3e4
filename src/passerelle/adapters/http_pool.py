"""A lean HTTP/1.1 transport for the patient-space clients: keep-alive connections over asyncio streams.

:class:`PooledTransport` is an ``httpx.AsyncBaseTransport`` (the clients keep httpx's request and
response model, its timeouts and ``MockTransport`` in unit tests); it replaces httpx's default
transport, whose pool looks at every open connection on every request (a system call each), which
made the cost of a request grow with the number of connections (docs/adr/0026-pipelined-dispatch.md).

Contract:

* HTTP/1.1 only (``h11`` frames and parses), one request at a time per connection, connections kept
  alive and reused most-recently-used first; at most ``max_connections`` requests in flight (more
  wait for a free slot, up to the ``pool`` timeout); an idle connection is closed after
  ``keepalive_expiry`` seconds or when the server closed it.
* Timeouts come from the request (httpx's ``connect``/``read``/``write``/``pool``) and raise httpx's
  own exceptions (``ConnectTimeout``, ``ReadTimeout``, ``WriteTimeout``, ``PoolTimeout``); socket
  failures raise ``ConnectError``/``ReadError``/``WriteError``, a malformed answer
  ``RemoteProtocolError``: all ``httpx.TransportError``, which the clients classify. The ``ssl.SSLError``
  behind a TLS failure stays in the chain of causes (``__cause__``), wherever it surfaced: at connect (a
  TLS 1.2 handshake alert), at the first read, or while the request is written (with TLS 1.3 the
  server's alert refusing our certificate arrives after our side of the handshake completed; asyncio
  then fails the write with a bare "Connection lost" and keeps the alert in the stream reader).
* A request that fails on a *reused* connection before any byte of the answer arrived (the server
  closed the idle connection meanwhile) is sent once more on a new connection, but only when
  repeating it is harmless: an idempotent method, or an ``Idempotency-Key`` header (the rule of Go's
  ``net/http``). Nothing else is ever retried here.
* The response body is streamed: a connection goes back to the pool once its body was read to the
  end, and is closed when the reader stops early (a response over the client's size cap).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_READ_SIZE = 64 * 1024

Origin = tuple[str, str, int]


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    origin: Origin
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(our_role=h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False

    def usable(self, now: float, expiry: float) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing() or now - self.idle_since > expiry)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class _Unanswered(Exception):
    """The request failed before any byte of the answer arrived (safe to resend when idempotent)."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class PooledTransport(httpx.AsyncBaseTransport):
    """See the module docstring. ``ssl_context`` is used for ``https`` URLs (None: the default context)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 10,
        keepalive_expiry: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._expiry = keepalive_expiry
        self._clock = clock
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no free connection slot", request=request) from exc
        try:
            return await self._exchange(request, body, timeouts)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, request: httpx.Request, body: bytes, timeouts: dict[str, float | None]) -> httpx.Response:
        conn = await self._checkout(request, timeouts)
        try:
            return await self._send(conn, request, body, timeouts)
        except _Unanswered as exc:
            conn.close()
            if not (conn.reused and _repeatable(request)):
                raise exc.error from exc
        except BaseException:
            conn.close()
            raise
        conn = await self._connect(request, timeouts)
        try:
            return await self._send(conn, request, body, timeouts)
        except _Unanswered as exc:
            conn.close()
            raise exc.error from exc
        except BaseException:
            conn.close()
            raise

    async def _checkout(self, request: httpx.Request, timeouts: dict[str, float | None]) -> _Connection:
        origin = _origin(request.url)
        idle = self._idle.get(origin, [])
        now = self._clock()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._expiry):
                conn.reused = True
                return conn
            conn.close()
        return await self._connect(request, timeouts)

    async def _connect(self, request: httpx.Request, timeouts: dict[str, float | None]) -> _Connection:
        scheme, host, port = origin = _origin(request.url)
        context = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=_READ_SIZE
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect timeout ({type(exc).__name__})", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connect failed ({type(exc).__name__})", request=request) from exc
        return _Connection(reader, writer, origin)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:  # the system's trust store, loaded once
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _send(
        self, conn: _Connection, request: httpx.Request, body: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.raw]
        start = h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
        try:
            data = conn.h11.send(start) or b""
            if body:
                data += conn.h11.send(h11.Data(data=body)) or b""
            data += conn.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        try:
            conn.writer.write(data)
            async with asyncio.timeout(timeouts.get("write")):
                await conn.writer.drain()
        except TimeoutError as exc:
            raise _Unanswered(httpx.WriteTimeout("write timeout", request=request)) from exc
        except OSError as exc:
            error = httpx.WriteError(f"write failed ({type(exc).__name__})", request=request)
            raise _Unanswered(error) from _received_alert(conn) or exc
        head = await self._head(conn, request, timeouts.get("read"))
        stream = _Body(self, conn, request, timeouts.get("read"))
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def _head(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> h11.Response:
        received = False
        while True:
            event = await _next_event(conn, request, timeout, started=received)
            received = True
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}", request=request)

    def _give_back(self, conn: _Connection) -> None:
        """Called once a response was read to its end (or abandoned): the slot frees, the connection
        goes back to the pool when it can carry another request."""
        self._slots.release()
        reusable = (
            not self._closed
            and conn.h11.our_state is h11.DONE
            and conn.h11.their_state is h11.DONE
            and not conn.writer.is_closing()
        )
        if not reusable:
            conn.close()
            return
        conn.h11.start_next_cycle()
        conn.idle_since = self._clock()
        self._idle.setdefault(conn.origin, []).append(conn)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Body(httpx.AsyncByteStream):
    """A response body read from its connection; closing it returns or closes the connection."""

    def __init__(self, pool: PooledTransport, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        self._pool, self._request, self._timeout = pool, request, timeout
        self._conn: _Connection | None = conn
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self._done and self._conn is not None:
            event = await _next_event(self._conn, self._request, self._timeout, started=True)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
            else:
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}", request=self._request)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not self._done:
            conn.close()  # the caller stopped reading: the rest of the body stays on the wire
        self._pool._give_back(conn)


async def _next_event(conn: _Connection, request: httpx.Request, timeout: float | None, *, started: bool) -> Any:
    """The next h11 event of the answer, reading from the socket as needed."""
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(f"malformed answer ({exc})", request=request) from exc
        if event is not h11.NEED_DATA:
            return event
        try:
            async with asyncio.timeout(timeout):
                data = await conn.reader.read(_READ_SIZE)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("read timeout", request=request) from exc
        except OSError as exc:
            error = httpx.ReadError(f"read failed ({type(exc).__name__})", request=request)
            raise (error if started else _Unanswered(error)) from exc
        if not data and not started and conn.h11.their_state is h11.SEND_RESPONSE:
            raise _Unanswered(httpx.RemoteProtocolError("connection closed before any answer", request=request))
        conn.h11.receive_data(data)
        started = started or bool(data)


def _received_alert(conn: _Connection) -> ssl.SSLError | None:
    """The TLS error the connection's reader received (a server's alert), if that is what ended it."""
    received = conn.reader.exception()
    return received if isinstance(received, ssl.SSLError) else None


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _repeatable(request: httpx.Request) -> bool:
    return request.method.encode() in _IDEMPOTENT or "idempotency-key" in request.headers
