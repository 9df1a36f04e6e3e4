"""The MLLP listener: a thin asyncio shell around :mod:`.framing` and the intake handler.

Contract:

* Each connection has a reader task (framing, read-ahead of at most ``max_pipelined_frames`` frames and
  about ``max_pipelined_bytes`` bytes) and a
  writer loop. Frames already buffered when the writer loop is free are handed to
  :meth:`MllpHandler.handle_batch` together (one durable commit for all of them); a lone frame goes to
  :meth:`MllpHandler.handle`. Replies are written in frame order, one per frame whose handler result
  is not ``None``. The server never builds an HL7 reply itself: what is positive is the intake's call.
* A frame over ``max_frame_bytes`` goes to :meth:`OversizeHandler.handle_oversize` (when given) with
  its MSH prefix, so the intake can answer AR; without such a handler, or when it returns ``None``,
  the connection is closed after the replies already due.
* A broken frame (bad end block, restarted frame, partial frame at end of stream) is never answered.
  Too much junk, the per-frame deadline, the idle timeout, a handler error or timeout close the
  connection (after writing the replies already due), with a log line and a metric.
* Connection hygiene (ADR 0024): a connection with no frame started for ``idle_timeout`` (60 s) is
  closed (``idle_timeout``) — never while a frame it sent still waits for its reply. When the table is
  full (``max_connections``), the connection idle the longest (not inside a frame, no frame waiting for
  its reply) is closed (``evicted``) to admit the new one; a sender that is sending is never cut. When
  none is idle, or the source is at ``max_connections_per_source``, or outside ``allowed_networks``,
  the new connection is closed at once (before any TLS handshake), counted as refused and audited
  (coalesced, :mod:`.refusals`).
* Sender binding: with ``tls.bindings``, each mutual-TLS connection carries the
  :class:`~passerelle.connector.intake.binding.Principal` of its certificate to every intake call.
* Logs carry peer address, sizes and reasons, never payload bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import socket
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import cast

from passerelle.connector.intake.binding import Principal
from passerelle.connector.listeners.mllp.framing import (
    Frame,
    FrameRejected,
    FrameTimeoutError,
    FramingLimits,
    MllpFramer,
    TooLarge,
)
from passerelle.connector.listeners.mllp.ports import MllpHandler, MllpMetrics, NullMetrics, OversizeHandler
from passerelle.connector.listeners.mllp.refusals import TlsRefusals, classify
from passerelle.connector.listeners.mllp.settings import MllpSettings
from passerelle.connector.listeners.mllp.tls import (
    ClientAllowList,
    ClientCertificateError,
    ClientIdentity,
    SenderBindings,
    server_context,
)
from passerelle.connector.listeners.net import address_in
from passerelle.connector.listeners.refusals import RefusalFlush
from passerelle.errors import FramingError
from passerelle.mappings.hl7v2.mllp import frame
from passerelle.observability.audit import AuditTrail
from passerelle.observability.refusals import RefusalLog

log = logging.getLogger("passerelle.connector.listeners.mllp")


@dataclass(frozen=True, slots=True)
class _Received:
    event: Frame | TooLarge
    at: float


class _End:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class MllpServer:
    """MLLP listener. ``await start()``, then ``await stop()`` (idempotent)."""

    def __init__(
        self,
        settings: MllpSettings,
        handler: MllpHandler,
        *,
        oversize_handler: OversizeHandler | None = None,
        metrics: MllpMetrics | None = None,
        ssl_context: ssl.SSLContext | None = None,
        audit: AuditTrail | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._settings, self._handler, self._oversize = settings, handler, oversize_handler
        self._metrics: MllpMetrics = metrics or cast(MllpMetrics, NullMetrics())
        # the framing limits are the settings of the same names (the others keep their defaults)
        names = [f.name for f in dataclasses.fields(FramingLimits) if f.name in MllpSettings.model_fields]
        self._limits = FramingLimits(**{name: getattr(settings, name) for name in names})
        self._networks = list(settings.allowed_networks)
        self._ssl: ssl.SSLContext | None = ssl_context
        self._allow: ClientAllowList | None = None
        if settings.tls.enabled and settings.tls.require_client_cert:
            self._allow = ClientAllowList.from_settings(settings.tls)
        self._bindings = SenderBindings.from_settings(settings.tls)
        # the gateway's refusal log (its life is the gateway's), else one of our own over ``audit``
        self._own_flush = RefusalFlush(RefusalLog(audit)) if refusals is None and audit is not None else None
        refusal_log = refusals or (self._own_flush.log if self._own_flush is not None else None)
        self._refusals = TlsRefusals(log=refusal_log) if refusal_log is not None else None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._conns: set[_Connection] = set()
        self._per_source: Counter[str] = Counter()
        self._stopping = False
        self._stop_lock = asyncio.Lock()

    @property
    def port(self) -> int:
        """The bound port (useful with ``port: 0``)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        """Load the TLS material (when enabled) and listen. Fails with an ``OSError`` (``ssl.SSLError``
        included) for a busy port or unreadable certificates; nothing is left open then."""
        if self._server is not None:
            return
        if self._settings.tls.enabled and self._ssl is None:
            self._ssl = server_context(self._settings.tls)
        self._server = await asyncio.start_server(
            self._accept,
            host=self._settings.host,
            port=self._settings.port,
            limit=self._settings.read_chunk_bytes,
            backlog=min(self._settings.max_connections, 1024),
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        if self._own_flush is not None:
            await self._own_flush.start()
        log.info(
            "mllp listening on %s:%d (tls=%s, mtls=%s)",
            self._settings.host,
            self.port,
            self._ssl is not None,
            self._allow is not None,
        )

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let frames already received be answered (up to ``drain_timeout``), close."""
        async with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
            timeout = self._settings.drain_timeout if drain_timeout is None else drain_timeout
            if self._server is not None:
                self._server.close()
            conns = list(self._conns)
            for conn in conns:
                conn.stop_reading()
            tasks = [c.task for c in conns if c.task is not None]
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1.0)
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
            if self._own_flush is not None:
                await self._own_flush.stop()
            log.info("mllp listener stopped (%d connections drained)", len(conns))

    # --- accepting -------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        host, port = str(peername[0]), int(peername[1])
        peer = f"{host}:{port}"
        refusal = self._refusal(host)
        if refusal == "max_connections" and self._evict_idle():
            refusal = None
        if refusal is not None:
            self._metrics.connection_refused(refusal)
            log.warning("mllp connection from %s refused: %s", peer, refusal)
            writer.transport.abort()
            if self._refusals is not None:
                await self._refusals.connection_refused(host, refusal)
            return
        conn = _Connection(self, reader, writer, peer, host)
        conn.task = asyncio.current_task()
        self._conns.add(conn)
        self._per_source[host] += 1
        self._metrics.connection_opened()
        reason = "closed"
        try:
            reason = await conn.run()
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        finally:
            self._release(conn)
            reason = "evicted" if conn.evicted else reason
            self._metrics.connection_closed(reason)
            if reason == "cancelled":
                writer.transport.abort()
            else:
                writer.close()
            log.info("mllp connection from %s closed: %s", peer, reason)

    async def _tls_refused(self, host: str, cls: str | None, fingerprint: str = "") -> None:
        """Count a refused handshake by class; audit it unless the peer just went away (``cls`` None)."""
        self._metrics.connection_refused(f"tls_{cls or 'disconnected'}")
        if cls is not None and self._refusals is not None:
            await self._refusals.refused(host, cls, fingerprint)

    def _refusal(self, host: str) -> str | None:
        if self._stopping:
            return "stopping"
        if self._networks and not address_in(host, self._networks):
            return "not_allowed"
        if self._per_source[host] >= self._settings.max_connections_per_source:
            return "max_per_source"
        if len(self._conns) >= self._settings.max_connections:
            return "max_connections"
        return None

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest to make room; ``False`` when every one is busy."""
        idle = [c for c in self._conns if c.idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        log.warning("mllp connection from %s evicted (idle, the table is full)", victim.peer)
        self._release(victim)
        victim.evict()
        return True

    def _release(self, conn: _Connection) -> None:
        """Take ``conn`` out of the table and the per-source count (once)."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        self._per_source[conn.host] -= 1
        if self._per_source[conn.host] <= 0:
            del self._per_source[conn.host]

    def _set_keepalive(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is None or not self._settings.tcp_keepalive:
            return
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self._settings.keepalive_idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, self._settings.keepalive_interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, self._settings.keepalive_count)


class _Connection:
    def __init__(
        self,
        server: MllpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        host: str,
    ) -> None:
        self.server, self.reader, self.writer, self.peer, self.host = server, reader, writer, peer, host
        self.task: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[_Received | _End] = asyncio.Queue(server._settings.max_pipelined_frames)
        self.reader_task: asyncio.Task[None] | None = None
        # Read-ahead byte budget: the reader pauses while frames waiting for the replier hold more.
        self.queued_bytes = 0
        self.room = asyncio.Event()
        self.room.set()
        self.framer: MllpFramer | None = None
        self.principal: Principal | None = None
        # Hygiene: frames received and not yet answered, last frame or reply, closed to make room.
        self.outstanding = 0
        self.last_active = time.monotonic()
        self.evicted = False

    @property
    def idle(self) -> bool:
        """Neither inside a frame nor holding a frame that waits for its reply (evictable)."""
        return self.outstanding == 0 and not (self.framer is not None and self.framer.in_frame)

    def evict(self) -> None:
        """Close an idle connection to make room (nothing received is left unanswered)."""
        self.evicted = True
        self.stop_reading()

    def stop_reading(self) -> None:
        """Stop taking new frames; the ones already received are still answered."""
        if self.reader_task is not None and not self.reader_task.done():
            self.reader_task.cancel()
        else:
            # Not started reading yet (TLS handshake): nothing received, nothing due.
            if self.task is not None and self.reader_task is None:
                self.task.cancel()

    async def run(self) -> str:
        srv = self.server
        srv._set_keepalive(self.writer)
        if srv._ssl is not None:
            refused = await self._secure(srv._ssl)
            if refused is not None:
                return refused
        framer = MllpFramer(self.reader, srv._limits, on_junk=srv._metrics.junk_bytes, hold=self._awaiting_reply)
        self.framer = framer
        self.reader_task = asyncio.create_task(self._read(framer))
        try:
            return await self._answer(framer)
        finally:
            if not self.reader_task.done():
                self.reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader_task

    async def _secure(self, context: ssl.SSLContext) -> str | None:
        """The TLS handshake and the client-certificate allow-list; a refusal (its close reason) is
        counted (``refused_tls_<class>``), logged and audited (:mod:`.refusals`)."""
        srv, timeout = self.server, self.server._settings.tls.handshake_timeout
        try:
            async with asyncio.timeout(timeout):  # TimeoutError (asyncio's own deadline aborts unnamed)
                await self.writer.start_tls(context, ssl_handshake_timeout=timeout + 1)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.warning("mllp TLS handshake with %s failed: %s", self.peer, type(exc).__name__)
            await srv._tls_refused(self.host, classify(exc))
            return "tls_handshake"
        if srv._allow is None:
            return None
        ssl_object = self.writer.get_extra_info("ssl_object")
        try:
            identity = srv._allow.check(ssl_object)
        except ClientCertificateError as exc:
            log.warning("mllp connection from %s refused: %s", self.peer, exc.message)
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            cls, fingerprint = ("not_allowed", hashlib.sha256(der).hexdigest()) if der else ("no_certificate", "")
            await srv._tls_refused(self.host, cls, fingerprint)
            return "client_cert"
        self._bind(identity)
        return None

    def _bind(self, identity: ClientIdentity) -> None:
        bindings = self.server._bindings
        if bindings is None:
            log.info("mllp client certificate accepted from %s: %s", self.peer, identity.label)
            return
        self.principal = bindings.principal(identity)
        count = len(self.principal.senders)
        level = logging.INFO if count else logging.WARNING  # bound to nothing: every message will be refused
        text = "mllp client certificate accepted from %s: %s, bound to %d sender pattern(s)"
        log.log(level, text, self.peer, identity.label, count)

    def _awaiting_reply(self) -> bool:
        """The idle deadline does not run out while a frame of this connection waits for its reply."""
        return self.outstanding > 0

    async def _read(self, framer: MllpFramer) -> None:
        end = "eof"
        try:
            while (event := await framer.next_event()) is not None:
                stop = await self._received(event)
                if stop is not None:
                    end = stop
                    break
        except FramingError as exc:
            if isinstance(exc, FrameTimeoutError):
                self.server._metrics.frame_rejected("frame_timeout")
            log.warning("mllp connection from %s: %s", self.peer, exc.reason)
            end = exc.reason
        except (ConnectionError, OSError) as exc:
            log.info("mllp connection from %s: read failed (%s)", self.peer, type(exc).__name__)
            end = "read_error"
        except asyncio.CancelledError:
            end = "stopping"
        await self.queue.put(_End(end))

    async def _received(self, event: Frame | TooLarge | FrameRejected) -> str | None:
        """Queue one framing event for the writer loop (waiting while the read-ahead budget is spent);
        returns a close reason for a partial frame at the end of the stream."""
        metrics = self.server._metrics
        if isinstance(event, FrameRejected):
            metrics.frame_rejected(event.reason)
            log.warning("mllp frame from %s discarded: %s (%d bytes)", self.peer, event.reason, event.size)
            return "partial_frame" if event.reason == "partial" else None
        if isinstance(event, TooLarge):
            metrics.frame_rejected("too_large")
            limit = self.server._limits.max_frame_bytes
            log.warning("mllp frame from %s over the limit: %d bytes (max %d)", self.peer, event.size, limit)
        else:
            metrics.frame_received(len(event.payload))
        self.outstanding += 1
        self.last_active = time.monotonic()
        await self.queue.put(_Received(event, self.last_active))
        self.queued_bytes += _size(event)
        while self.queued_bytes >= self.server._settings.max_pipelined_bytes:
            self.room.clear()
            await self.room.wait()
        return None

    async def _answer(self, framer: MllpFramer) -> str:
        settings = self.server._settings
        while True:
            first = await self.queue.get()
            if isinstance(first, _End):
                return first.reason
            run: list[_Received] = [first]
            end: _End | None = None
            while len(run) < settings.max_pipelined_frames:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if isinstance(nxt, _End):
                    end = nxt
                    break
                run.append(nxt)
            outcome = await self._process(run)
            self.queued_bytes -= sum(_size(item.event) for item in run)
            self.outstanding -= len(run)
            self.last_active = time.monotonic()
            self.room.set()
            framer.touch()
            if outcome is not None:
                return outcome
            if end is not None:
                return end.reason

    async def _process(self, run: list[_Received]) -> str | None:
        """Answer a run of received frames in order; return a close reason or ``None``."""
        i = 0
        while i < len(run):
            j = i + 1
            if isinstance(run[i].event, TooLarge):
                outcome = await self._answer_oversize(run[i])
            else:
                while j < len(run) and isinstance(run[j].event, Frame):
                    j += 1
                outcome = await self._answer_frames(run[i:j])
            if outcome is not None:
                return outcome
            i = j
        return None

    async def _answer_oversize(self, item: _Received) -> str | None:
        event = item.event
        assert isinstance(event, TooLarge)
        oversize = self.server._oversize
        if oversize is None:
            return "too_large"
        try:
            async with asyncio.timeout(self.server._settings.handler_timeout):
                reply = await oversize.handle_oversize(event.msh_prefix, event.size, self.peer)
        except Exception as exc:  # noqa: BLE001 - any intake failure means "no reply"
            log.error("mllp oversize handler failed for %s: %s", self.peer, type(exc).__name__)
            return "handler_error"
        if reply is None:
            return "too_large"
        return None if await self._write([(reply, item.at)]) else "write_error"

    async def _answer_frames(self, frames: list[_Received]) -> str | None:
        try:
            replies = await self._call(frames)
        except TimeoutError:
            log.error("mllp intake timed out for %d frame(s) from %s", len(frames), self.peer)
            return "handler_timeout"
        except Exception as exc:  # noqa: BLE001 - any intake failure means "no reply"
            log.error("mllp intake failed for %d frame(s) from %s: %s", len(frames), self.peer, type(exc).__name__)
            return "handler_error"
        out = [(r, f.at) for r, f in zip(replies, frames, strict=True) if r is not None]
        if out and not await self._write(out):
            return "write_error"
        return None

    async def _call(self, frames: list[_Received]) -> list[bytes | None]:
        handler = self.server._handler
        async with asyncio.timeout(self.server._settings.handler_timeout):
            if len(frames) == 1:
                ev = frames[0].event
                assert isinstance(ev, Frame)
                return [await handler.handle(ev.payload, self.peer, self.principal)]
            items = []
            for f in frames:
                assert isinstance(f.event, Frame)
                items.append((f.event.payload, self.peer))
            replies = await handler.handle_batch(items, self.principal)
        if len(replies) != len(frames):
            raise ValueError("handler returned a reply list of the wrong length")
        return replies

    async def _write(self, replies: list[tuple[bytes, float]]) -> bool:
        self.writer.write(b"".join(frame(r) for r, _ in replies))
        try:
            # Wait (bounded) only when the kernel did not take the replies at once: the usual case
            # costs no timer (intake speed, docs/adr/0027-intake-throughput.md).
            if self.writer.transport.get_write_buffer_size() or self.writer.transport.is_closing():
                async with asyncio.timeout(self.server._settings.write_timeout):
                    await self.writer.drain()
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.warning("mllp reply to %s not written: %s", self.peer, type(exc).__name__)
            return False
        now = time.monotonic()
        for _, at in replies:
            self.server._metrics.reply_sent(now - at)
        return True


def _size(event: Frame | TooLarge) -> int:
    return len(event.payload) if isinstance(event, Frame) else len(event.msh_prefix)
