"""The space clients' HTTP/1.1 transport (adapters/http_pool.py) against real sockets: a scripted
asyncio server on 127.0.0.1 that counts connections and requests and answers as told."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from passerelle.adapters.http_pool import PooledTransport
from tests.support.tls_front import server_context, tls_front

Script = Callable[["Server", int, bytes], Awaitable[bytes | None]]  # (server, n-th request, head) -> answer


def answer(body: bytes = b"ok", *, status: int = 200, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n" % (status, len(body), extra) + body


@dataclass
class Server:
    script: Script
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests.append(head)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    reply = await self.script(self, len(self.requests), head)
                finally:
                    self.in_flight -= 1
                if reply is None:  # drop the connection without answering
                    break
                writer.write(reply)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield server


@contextlib.asynccontextmanager
async def client(max_connections: int = 4, read: float = 5.0) -> AsyncIterator[httpx.AsyncClient]:
    transport = PooledTransport(max_connections=max_connections)
    timeout = httpx.Timeout(connect=5.0, read=read, write=5.0, pool=5.0)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as c:
        yield c


async def plain(server: Server, n: int, head: bytes) -> bytes:
    return answer(b"answer %d" % n)


async def test_keep_alive_connections_are_reused() -> None:
    async with serving(plain) as server, client() as c:
        bodies = [(await c.get(f"http://127.0.0.1:{server.port}/x")).content for _ in range(5)]
    assert bodies == [b"answer %d" % n for n in range(1, 6)]
    assert server.connections == 1


async def test_chunked_answers_are_read_whole() -> None:
    async def chunked(server: Server, n: int, head: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

    async with serving(chunked) as server, client() as c:
        first = await c.post(f"http://127.0.0.1:{server.port}/fhir", content=b"{}")
        second = await c.post(f"http://127.0.0.1:{server.port}/fhir", content=b"{}")
    assert first.content == second.content == b"hello world"
    assert server.connections == 1


async def test_at_most_max_connections_requests_in_flight() -> None:
    async def slow(server: Server, n: int, head: bytes) -> bytes:
        # hold every request until two are in flight (or a while), so a third would show
        for _ in range(500):
            if server.in_flight >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        return answer()

    async with serving(slow) as server, client(max_connections=2) as c:
        url = f"http://127.0.0.1:{server.port}/x"
        answers = await asyncio.gather(*(c.get(url) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert server.most_in_flight == 2 and server.connections == 2


async def _dropping_the_second(server: Server, n: int, head: bytes) -> bytes | None:
    return None if n == 2 else answer()


async def test_a_request_with_an_idempotency_key_is_sent_again_when_a_reused_connection_drops() -> None:
    async with serving(_dropping_the_second) as server, client() as c:
        url = f"http://127.0.0.1:{server.port}/fhir"
        await c.post(url, content=b"{}", headers={"Idempotency-Key": "1.2.3"})
        again = await c.post(url, content=b"{}", headers={"Idempotency-Key": "1.2.4"})
    assert again.status_code == 200
    assert len(server.requests) == 3 and server.connections == 2  # the dropped one, sent again on a new one


async def test_a_post_without_idempotency_key_is_not_sent_again() -> None:
    async with serving(_dropping_the_second) as server, client() as c:
        url = f"http://127.0.0.1:{server.port}/fhir"
        await c.post(url, content=b"{}")
        with pytest.raises(httpx.TransportError):
            await c.post(url, content=b"{}")
    assert len(server.requests) == 2


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(server: Server, n: int, head: bytes) -> bytes:
        await asyncio.sleep(5)
        return answer()

    async with serving(silent) as server, client(read=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{server.port}/x")


async def test_an_abandoned_body_closes_its_connection() -> None:
    async def big(server: Server, n: int, head: bytes) -> bytes:
        return answer(b"x" * 300_000)

    async with serving(big) as server, client() as c:
        url = f"http://127.0.0.1:{server.port}/x"
        async with c.stream("GET", url) as response:
            async for _ in response.aiter_bytes():
                break  # a reader over its size cap stops here
        assert len((await c.get(url)).content) == 300_000
    assert server.connections == 2


async def test_a_malformed_answer_is_a_protocol_error() -> None:
    async def garbage(server: Server, n: int, head: bytes) -> bytes:
        return b"NOT HTTP AT ALL\r\n\r\n"

    async with serving(garbage) as server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"http://127.0.0.1:{server.port}/x")


async def test_nothing_listening_is_a_connect_error() -> None:
    async with serving(plain) as server:
        port = server.port
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/x")


async def test_a_tls_alert_read_while_the_request_is_written_stays_the_cause(tmp_path: Path) -> None:
    """TLS 1.3: our side of the handshake completes before the server judged our certificate, so its
    alert may be read while the request is written. asyncio's ``drain`` then fails with a bare
    "Connection lost" and keeps the alert in the stream reader; the transport's error must carry the
    alert (the clients turn it into a credential error), not the bare loss."""
    ca, other = trustme.CA(), trustme.CA()
    server_pem, other_ca = tmp_path / "server.pem", tmp_path / "other-ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    other.cert_pem.write_to_path(str(other_ca))
    ours = ssl.create_default_context()
    ca.configure_trust(ours)
    ca.issue_cert("passerelle-client").configure_cert(ours)
    with tls_front(server_context(server_pem, None, other_ca, ssl.TLSVersion.TLSv1_3)) as front:
        pool = PooledTransport(ssl_context=ours)
        timeouts = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
        request = httpx.Request("POST", f"https://{front.host}/", content=b"x", extensions={"timeout": timeouts})
        conn = await pool._connect(request, timeouts)
        while not conn.writer.transport.is_closing():  # the alert was read; the reader is told on the next turn
            await asyncio.sleep(0)
        assert conn.reader.exception() is None
        with pytest.raises(Exception) as failed:
            await pool._send(conn, request, b"x", timeouts)
        await pool.aclose()
    error = failed.value.error  # type: ignore[attr-defined]  # _Unanswered: the request was not answered
    assert isinstance(error, httpx.WriteError)
    cause = failed.value.__cause__
    assert isinstance(cause, ssl.SSLError) and cause.reason == "TLSV1_ALERT_UNKNOWN_CA"
