"""MLLP listener on 127.0.0.1:0 with a fake intake: pipelining, batching, limits, caps, lifecycle."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from passerelle.connector.intake.binding import Principal
from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
from tests.support.mllp_peer import CR, FS, VT, msa, read_replies, write_in_pieces


def msg(ctrl: str, body: bytes = b"") -> bytes:
    return b"MSH|^~\\&|LAB|FAC|GW|FAC|20260101000000||ORU^R01|" + ctrl.encode() + b"|P|2.5\rPID|1||X\r" + body


def control_id(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[9].decode()


def ack_for(payload: bytes, code: str = "AA") -> bytes:
    return b"MSH|^~\\&|GW|FAC|LAB|FAC|20260101000000||ACK|A1|P|2.5\rMSA|%s|%s\r" % (
        code.encode(),
        control_id(payload).encode() if payload.startswith(b"MSH") else b"",
    )


class FakeIntake:
    """Answers AA echoing MSH-10; records calls (batch sizes) and can be slowed or broken."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.seen: list[bytes] = []
        self.fail = False
        self.oversize: list[tuple[bytes, int]] = []
        self.principals: list[Principal | None] = []

    async def handle(self, payload: bytes, peer: str, principal: Principal | None = None) -> bytes | None:
        return (await self.handle_batch([(payload, peer)], principal))[0]

    async def handle_batch(
        self, items: Sequence[tuple[bytes, str]], principal: Principal | None = None
    ) -> list[bytes | None]:
        self.principals.append(principal)
        self.calls.append(len(items))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("journal down")
        self.seen.extend(p for p, _ in items)
        return [ack_for(p) if p.startswith(b"MSH") else None for p, _ in items]

    async def handle_oversize(self, msh_prefix: bytes, size: int, peer: str) -> bytes | None:
        self.oversize.append((msh_prefix, size))
        if not msh_prefix:
            return None
        return ack_for(msh_prefix + b"\r", "AR")


class Metrics:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self.latencies: list[float] = []

    def connection_opened(self) -> None:
        self.c["opened"] += 1

    def connection_closed(self, reason: str) -> None:
        self.c[f"closed:{reason}"] += 1

    def connection_refused(self, reason: str) -> None:
        self.c[f"refused:{reason}"] += 1

    def frame_received(self, size: int) -> None:
        self.c["frames"] += 1

    def frame_rejected(self, reason: str) -> None:
        self.c[f"rejected:{reason}"] += 1

    def junk_bytes(self, count: int) -> None:
        self.c["junk"] += count

    def reply_sent(self, latency_seconds: float) -> None:
        self.latencies.append(latency_seconds)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def intake() -> FakeIntake:
    return FakeIntake()


async def start(intake: FakeIntake, metrics: Metrics, **kw: object) -> MllpServer:
    settings = MllpSettings(port=0, **kw)  # type: ignore[arg-type]
    server = MllpServer(settings, intake, oversize_handler=intake, metrics=metrics)
    await server.start()
    return server


@asynccontextmanager
async def running(intake: FakeIntake, metrics: Metrics, **kw: object) -> AsyncIterator[MllpServer]:
    """The listener on 127.0.0.1:0 (:func:`start`), stopped on exit."""
    srv = await start(intake, metrics, **kw)
    try:
        yield srv
    finally:
        await srv.stop(1)


@pytest.fixture
async def server(intake: FakeIntake, metrics: Metrics) -> AsyncIterator[MllpServer]:
    async with running(intake, metrics) as srv:
        yield srv


async def connect(srv: MllpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def assert_closed(reader: asyncio.StreamReader) -> bytes:
    """Read to the end; a reset (refused connection) counts as closed with nothing sent."""
    async with asyncio.timeout(5):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def test_one_message_one_ack(server: MllpServer) -> None:
    r, w = await connect(server)
    w.write(frame(msg("C1")))
    [reply] = await read_replies(r, 1)
    assert msa(reply) == ("AA", "C1")
    w.close()


async def test_fifty_pipelined_frames_in_one_write_fcrlf_and_nul(
    server: MllpServer, intake: FakeIntake, metrics: Metrics
) -> None:
    r, w = await connect(server)
    data = b"".join(VT + msg(f"P{i}") + FS + CR + b"\n" + b"\x00" for i in range(50))
    w.write(data)
    replies = await read_replies(r, 50)
    assert [msa(x) for x in replies] == [("AA", f"P{i}") for i in range(50)]
    assert len(intake.seen) == 50
    await asyncio.sleep(0.05)
    assert metrics.c["junk"] == 50  # one NUL after each frame
    assert max(intake.calls) > 1  # read-ahead frames were batched into one handler call
    w.close()


async def test_one_byte_writes(server: MllpServer) -> None:
    r, w = await connect(server)
    for b in frame(msg("B1")):
        w.write(bytes([b]))
        await w.drain()
    [reply] = await read_replies(r, 1)
    assert msa(reply) == ("AA", "B1")
    w.close()


async def test_broken_frames_get_no_reply_and_good_ones_do(server: MllpServer, metrics: Metrics) -> None:
    r, w = await connect(server)
    w.write(
        b"GET / HTTP/1.1\r\n\r\n"
        + VT
        + msg("BAD1")
        + FS
        + b"X"  # FS + other byte
        + VT
        + msg("BAD2")  # no FS, next VT restarts
        + frame(msg("OK1"))
        + frame(b"")  # empty frame: the (fake) intake answers nothing
        + frame(msg("OK2"))
    )
    replies = await read_replies(r, 2)
    assert [msa(x) for x in replies] == [("AA", "OK1"), ("AA", "OK2")]
    w.write(VT + msg("PARTIAL"))
    w.write_eof()
    assert await assert_closed(r) == b""  # partial frame: no reply, connection closed
    await asyncio.sleep(0.05)
    assert metrics.c["rejected:bad_end"] == 1
    assert metrics.c["rejected:nested_start"] == 1
    assert metrics.c["rejected:partial"] == 1
    assert metrics.c["closed:partial_frame"] == 1


async def test_too_large_with_msh_gets_ar_and_connection_continues(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_frame_bytes=4096) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("BIG", b"OBX|" + b"A" * 10000)) + frame(msg("AFTER")))
        replies = await read_replies(r, 2)
        assert [msa(x) for x in replies] == [("AR", "BIG"), ("AA", "AFTER")]
        assert intake.oversize[0][1] > 4096
        assert b"OBX" not in intake.oversize[0][0]
        # Without a readable MSH: closed, no reply.
        w.write(frame(b"Z" * 5000))
        assert await assert_closed(r) == b""
        assert [control_id(p) for p in intake.seen] == ["AFTER"]


async def test_junk_flood_closes_without_reply(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_junk_bytes=1024) as srv:
        r, w = await connect(srv)
        w.write(b"\x16\x03\x01" + b"\x00" * 4000)
        assert await assert_closed(r) == b""
        assert intake.seen == []


async def test_slowloris_closed_at_frame_deadline_others_unaffected(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, frame_timeout=0.3) as srv:
        r, w = await connect(srv)
        w.write(VT + b"MSH|")
        r2, w2 = await connect(srv)
        w2.write(frame(msg("FAST")))
        [reply] = await read_replies(r2, 1)
        assert msa(reply) == ("AA", "FAST")
        for _ in range(10):
            w.write(b"x")
            await asyncio.sleep(0.1)
            if r.at_eof():
                break
        assert await assert_closed(r) == b""
        await asyncio.sleep(0.05)
        assert metrics.c["rejected:frame_timeout"] == 1
        assert srv.connection_count == 1
        w2.close()


async def test_idle_timeout_closes(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, idle_timeout=0.2) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("I1")))
        await read_replies(r, 1)
        assert await assert_closed(r) == b""
        await asyncio.sleep(0.05)
        assert metrics.c["closed:idle_timeout"] == 1


async def test_connection_caps(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_connections=3, max_connections_per_source=2) as srv:
        a = await connect(srv)
        b = await connect(srv)
        c = await connect(srv)  # over the per-source cap
        assert await assert_closed(c[0]) == b""
        a[1].write(frame(msg("KEEP")))
        assert msa((await read_replies(a[0], 1))[0]) == ("AA", "KEEP")
        await asyncio.sleep(0.05)
        assert metrics.c["refused:max_per_source"] == 1
        b[1].close()
        await asyncio.sleep(0.1)
        d = await connect(srv)  # slot freed
        d[1].write(frame(msg("D")))
        assert msa((await read_replies(d[0], 1))[0]) == ("AA", "D")


async def test_source_allow_list_refuses(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, allowed_networks=[ipaddress.ip_network("10.0.0.0/8")]) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("NO")))
        assert await assert_closed(r) == b""
        assert intake.seen == []
        assert metrics.c["refused:not_allowed"] == 1
    async with running(intake, metrics, allowed_networks=[ipaddress.ip_network("127.0.0.0/8")]) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("YES")))
        assert msa((await read_replies(r, 1))[0]) == ("AA", "YES")


async def test_handler_failure_closes_without_any_reply(
    server: MllpServer, intake: FakeIntake, metrics: Metrics
) -> None:
    intake.fail = True
    r, w = await connect(server)
    w.write(frame(msg("F1")) + frame(msg("F2")))
    assert await assert_closed(r) == b""
    await asyncio.sleep(0.05)
    assert metrics.c["closed:handler_error"] == 1


async def test_stop_drains_in_flight_frames_and_is_idempotent(intake: FakeIntake, metrics: Metrics) -> None:
    intake.delay = 0.2
    srv = await start(intake, metrics)
    r, w = await connect(srv)
    w.write(frame(msg("S1")))
    await asyncio.sleep(0.05)  # frame received, intake busy
    await asyncio.gather(srv.stop(5), srv.stop(5))
    [reply] = await read_replies(r, 1)
    assert msa(reply) == ("AA", "S1")
    assert await assert_closed(r) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", srv.port)
    await srv.stop()


async def test_concurrent_connections_random_splits_pipelining(server: MllpServer, intake: FakeIntake) -> None:
    """1,000 messages over 8 connections, random split points: one correlated ACK per message."""
    rng = random.Random(1234)

    async def client(k: int) -> list[tuple[str, str]]:
        r, w = await connect(server)
        ids = [f"K{k}-{i}" for i in range(125)]
        data = b"".join(frame(msg(c)) for c in ids)
        await write_in_pieces(w, data, rng, 3000, pause_chance=0.2)
        replies = await read_replies(r, len(ids), timeout=60)
        w.close()
        got = [msa(x) for x in replies]
        assert got == [("AA", c) for c in ids]
        return got

    results = await asyncio.gather(*(client(k) for k in range(8)))
    assert sum(len(x) for x in results) == 1000
    assert len(intake.seen) == 1000


async def test_tcp_keepalive_is_set_on_accepted_connections(server: MllpServer) -> None:
    import socket

    r, w = await connect(server)
    w.write(frame(msg("K1")))
    await read_replies(r, 1)
    [conn] = list(server._conns)
    sock = conn.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 180
    w.close()


async def test_stop_mid_frame_never_answers_the_cut_frame(intake: FakeIntake, metrics: Metrics) -> None:
    srv = await start(intake, metrics)
    r, w = await connect(srv)
    w.write(frame(msg("DONE")) + VT + msg("HALF"))
    [reply] = await read_replies(r, 1)
    assert msa(reply) == ("AA", "DONE")
    await srv.stop(1)
    assert await assert_closed(r) == b""
    assert [control_id(p) for p in intake.seen] == ["DONE"]


async def test_large_stream_over_limit_is_discarded_then_the_connection_resyncs(
    intake: FakeIntake, metrics: Metrics
) -> None:
    """16 MiB through a 1 MiB limit: refused with the intake's AR, bytes dropped as they arrive."""
    async with running(intake, metrics, max_frame_bytes=1024 * 1024) as srv:
        r, w = await connect(srv)
        w.write(VT + msg("HUGE"))
        chunk = b"B" * (1024 * 1024)
        for _ in range(16):
            w.write(chunk)
            await w.drain()
        w.write(FS + CR + frame(msg("NEXT")))
        replies = await read_replies(r, 2, timeout=30)
        assert [msa(x) for x in replies] == [("AR", "HUGE"), ("AA", "NEXT")]
        assert intake.oversize[0][1] == len(msg("HUGE")) + 16 * 1024 * 1024
        assert metrics.c["rejected:too_large"] == 1


async def test_logs_never_carry_payload_bytes(
    intake: FakeIntake, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    """PHI canary (docs/bad-input.md S04) through every transport path: good, broken, oversize, failing."""
    import logging

    caplog.set_level(logging.DEBUG)
    canary = b"PID|1||ZZCANARYNOM^^^X||ZZCANARYNOM^Jean\r"
    async with running(intake, metrics, max_frame_bytes=2048, frame_timeout=0.3) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("G1", canary)) + VT + msg("B1", canary) + FS + b"X")
        w.write(frame(msg("BIG", canary * 100)))
        await read_replies(r, 2)
        intake.fail = True
        w.write(frame(msg("F1", canary)))
        assert await assert_closed(r) == b""
        r2, w2 = await connect(srv)
        w2.write(VT + msg("SLOW", canary))  # cut by the frame deadline
        assert await assert_closed(r2) == b""
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "mllp" in text
    assert "ZZCANARY" not in text


async def test_read_ahead_pauses_at_the_byte_budget(intake: FakeIntake, metrics: Metrics) -> None:
    """A slow intake and a sender streaming 2 KiB frames: the listener holds about the budget, not more."""
    intake.delay = 0.2
    async with running(intake, metrics, max_pipelined_bytes=8 * 1024, max_pipelined_frames=64) as srv:
        r, w = await connect(srv)
        body = b"OBX|1|ST|X||" + b"V" * 2000 + b"\r"
        w.write(b"".join(frame(msg(f"Q{i}", body)) for i in range(40)))
        await asyncio.sleep(0.1)  # the first batch is in the intake
        [conn] = list(srv._conns)
        assert conn.queued_bytes < 8 * 1024 + 4096
        assert conn.queue.qsize() <= 5
        replies = await read_replies(r, 40, timeout=30)
        assert [msa(x)[1] for x in replies] == [f"Q{i}" for i in range(40)]
        assert max(intake.calls) <= 5
