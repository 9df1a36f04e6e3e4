"""Connection hygiene of the MLLP listener (ADR 0024), real sockets on 127.0.0.1 and a fake intake:
a full table admits a newcomer by closing the connection idle the longest, never one that is inside a
frame or waiting for its reply; the idle timeout never cuts a sender waiting for its ACK."""

from __future__ import annotations

import asyncio

from passerelle.connector.listeners.mllp import frame
from tests.integration.test_mllp_server import (
    FakeIntake,
    Metrics,
    assert_closed,
    connect,
    intake,
    metrics,
    msg,
    running,
)
from tests.support.mllp_peer import msa, read_replies
from tests.support.waiting import until

__all__ = ["intake", "metrics"]  # fixtures shared with test_mllp_server.py


async def test_full_table_closes_the_connection_idle_the_longest(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_connections=2, max_connections_per_source=10) as srv:
        a = await connect(srv)
        await until(lambda: srv.connection_count == 1)
        b = await connect(srv)
        await until(lambda: srv.connection_count == 2)
        # a is the older connection but it just spoke: b is the one idle the longest.
        a[1].write(frame(msg("A1")))
        assert msa((await read_replies(a[0], 1))[0]) == ("AA", "A1")

        newcomer = await connect(srv)
        newcomer[1].write(frame(msg("NEW")))
        assert msa((await read_replies(newcomer[0], 1))[0]) == ("AA", "NEW")
        assert await assert_closed(b[0]) == b""
        await until(lambda: metrics.c["closed:evicted"] == 1)
        assert metrics.c["refused:max_connections"] == 0
        a[1].write(frame(msg("A2")))
        assert msa((await read_replies(a[0], 1))[0]) == ("AA", "A2")
        assert srv.connection_count == 2


async def test_full_table_of_sending_senders_refuses_the_newcomer(metrics: Metrics) -> None:
    intake = FakeIntake(delay=1.0)
    async with running(intake, metrics, max_connections=2, max_connections_per_source=10) as srv:
        waiting, inside = await connect(srv), await connect(srv)
        await until(lambda: srv.connection_count == 2)
        waiting[1].write(frame(msg("WAIT")))  # its ACK takes a second
        body = frame(msg("HALF"))
        inside[1].write(body[:20])  # a frame started, not finished
        await until(lambda: intake.calls and metrics.c["frames"] == 1)
        await asyncio.sleep(0.05)  # the half frame is read by the server

        refused = await connect(srv)
        assert await assert_closed(refused[0]) == b""
        assert metrics.c["refused:max_connections"] == 1
        assert metrics.c["closed:evicted"] == 0
        assert msa((await read_replies(waiting[0], 1))[0]) == ("AA", "WAIT")
        inside[1].write(body[20:])
        assert msa((await read_replies(inside[0], 1))[0]) == ("AA", "HALF")


async def test_junk_does_not_make_a_connection_busy(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_connections=1, max_connections_per_source=10) as srv:
        junk = await connect(srv)
        junk[1].write(b"GET / HTTP/1.1\r\n\r\n")  # bytes outside any frame: still idle
        await until(lambda: metrics.c["junk"] > 0)
        sender = await connect(srv)
        sender[1].write(frame(msg("S1")))
        assert msa((await read_replies(sender[0], 1))[0]) == ("AA", "S1")
        assert await assert_closed(junk[0]) == b""
        assert metrics.c["closed:evicted"] == 1


async def test_idle_timeout_waits_for_the_reply_then_restarts(metrics: Metrics) -> None:
    # The intake takes two idle timeouts to answer: the connection stays open, the ACK arrives, and
    # the sender can go on sending on the same connection (the idle timeout restarts at the reply).
    intake = FakeIntake(delay=2.0)
    async with running(intake, metrics, idle_timeout=1.0) as srv:
        r, w = await connect(srv)
        w.write(frame(msg("SLOW1")))
        assert msa((await read_replies(r, 1))[0]) == ("AA", "SLOW1")
        w.write(frame(msg("SLOW2")))
        assert msa((await read_replies(r, 1))[0]) == ("AA", "SLOW2")
        assert metrics.c["closed:idle_timeout"] == 0
        assert await assert_closed(r) == b""  # then, idle: closed
        await until(lambda: metrics.c["closed:idle_timeout"] == 1)


async def test_a_silent_connection_is_idle_from_the_start(intake: FakeIntake, metrics: Metrics) -> None:
    async with running(intake, metrics, max_connections=1, max_connections_per_source=10) as srv:
        silent = await connect(srv)
        await until(lambda: srv.connection_count == 1)
        r, w = await connect(srv)
        w.write(frame(msg("AFTER")))
        assert msa((await read_replies(r, 1))[0]) == ("AA", "AFTER")
        assert await assert_closed(silent[0]) == b""
