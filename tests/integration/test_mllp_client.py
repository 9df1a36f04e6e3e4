"""Business-ACK MLLP client against scripted MLLP peers on 127.0.0.1:0 (and against our own listener)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from passerelle.adapters.mllp_client import (
    AckConnectionError,
    AckMismatchError,
    AckTimeoutError,
    MllpClient,
    RetryPolicy,
    parse_ack,
    send_message,
)
from passerelle.connector.listeners.mllp import MllpServer, MllpSettings, frame
from passerelle.errors import ParseError, RemoteTransientError
from tests.integration.test_mllp_server import FakeIntake, msg
from tests.support.mllp_peer import read_frame

FAST = RetryPolicy(attempts=3, deadline=10, initial=0.01, max_wait=0.02, jitter=0.01)

Script = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[None]]


def ack(code: str, ctrl: str) -> bytes:
    return b"MSH|^~\\&|R|F|S|F|20260101||ACK|X|P|2.5\rMSA|%s|%s|text\r" % (code.encode(), ctrl.encode())


class Peer:
    """A scripted MLLP receiver: ``script(attempt, payload, writer)`` decides what to answer."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            payload = await read_frame(r)
        except asyncio.IncompleteReadError:
            w.close()
            return
        self.received.append(payload)
        await self.script(len(self.received), payload, w)
        w.close()


async def answer(code: str, ctrl: str | None = None) -> Script:
    async def script(n: int, payload: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"\x00\r\n" + frame(ack(code, ctrl if ctrl is not None else "Z1")))
        await w.drain()

    return script


async def test_returns_msa1_positive_and_negative() -> None:
    for code in ("AA", "AE", "AR", "CA"):
        async with Peer(await answer(code)) as peer:
            result = await MllpClient("127.0.0.1", peer.port, retry=FAST).send(msg("Z1"))
            assert (result.code, result.control_id) == (code, "Z1")
            assert peer.received == [msg("Z1")]  # a negative answer is not retried


async def test_mismatched_msa2_is_retried_then_raised() -> None:
    async with Peer(await answer("AA", "OTHER")) as peer:
        with pytest.raises(AckMismatchError):
            await MllpClient("127.0.0.1", peer.port, retry=FAST).send(msg("Z1"))
        assert len(peer.received) == 3


async def test_closed_without_reply_then_answered_resends_same_bytes() -> None:
    async def script(n: int, payload: bytes, w: asyncio.StreamWriter) -> None:
        if n > 1:
            w.write(frame(ack("AA", "Z1")))
            await w.drain()

    async with Peer(script) as peer:
        result = await MllpClient("127.0.0.1", peer.port, retry=FAST).send(msg("Z1"))
        assert result.code == "AA"
        assert peer.received == [msg("Z1"), msg("Z1")]


async def test_ack_timeout() -> None:
    async def silent(n: int, payload: bytes, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)

    async with Peer(silent) as peer:
        client = MllpClient("127.0.0.1", peer.port, ack_timeout=0.1, retry=RetryPolicy(2, 5, 0.01, 0.01, 0))
        with pytest.raises(AckTimeoutError):
            await client.send(msg("Z1"))
        assert len(peer.received) == 2


async def test_connection_refused_is_transient_and_bounded() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(AckConnectionError) as info:
        await MllpClient("127.0.0.1", port, retry=FAST).send(msg("Z1"))
    assert isinstance(info.value, RemoteTransientError)


async def test_reply_too_large_is_mismatch() -> None:
    async def huge(n: int, payload: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"\x0b" + b"A" * 5000)
        await w.drain()
        await asyncio.sleep(0.2)

    async with Peer(huge) as peer:
        client = MllpClient("127.0.0.1", peer.port, max_reply_bytes=1024, retry=RetryPolicy(1, 5, 0.01, 0.01, 0))
        with pytest.raises(AckMismatchError):
            await client.send(msg("Z1"))


async def test_message_without_msh10_is_permanent_and_sends_nothing() -> None:
    with pytest.raises(ParseError):
        await MllpClient("127.0.0.1", 9, retry=FAST).send(b"PID|1||X\r")


def test_parse_ack_rejects_non_ack() -> None:
    with pytest.raises(AckMismatchError):
        parse_ack(b"MSH|^~\\&|A\rPID|1\r")
    with pytest.raises(AckMismatchError):
        parse_ack(b"garbage")
    assert parse_ack(b"MSH|^~\\&|A\nMSA|AE|X1|bad\n").code == "AE"


async def test_against_our_listener() -> None:
    srv = MllpServer(MllpSettings(port=0), FakeIntake())
    await srv.start()
    try:
        result = await MllpClient("127.0.0.1", srv.port, retry=FAST).send(msg("OWN1"))
        assert (result.code, result.control_id) == ("AA", "OWN1")
    finally:
        await srv.stop(1)


async def test_send_message_returns_msa1() -> None:
    async with Peer(await answer("AE")) as peer:
        assert await send_message("127.0.0.1", peer.port, msg("Z1"), retry=FAST) == "AE"
