"""Request bodies over their cap or too slow on the real HTTP listener (uvicorn on 127.0.0.1 port 0),
B-HTTP-7 and B-HTTP-8.

The JSON API and the console's forms take at most 64 KiB, checked before any authentication; the CDA
route keeps ``cda.max_bytes``. Over the cap the answer is 413 (an RFC 7807 problem on ``/v1/...``, the
console's error page elsewhere); a body up to twice the cap is drained and the connection serves the next
request, a longer one is not read: ``Connection: close`` and the server closes. Raw sockets show what
the server does with bytes a client library would hide (a 20 MB body announced and never sent whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.gateway import AUTH, running_gateway

#: The cap of the JSON API and the console's forms (docs/bad-input.md B-HTTP-7).
API_MAX_BYTES = 64 * 1024
NOWHERE = "http://127.0.0.1:9/fhir"
TWENTY_MB = 20 * 1024 * 1024


class Answer:
    """One HTTP/1.1 response read off a raw socket."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """A raw client connection (asyncio streams: the gateway runs on this test's event loop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            body = await self.reader.readexactly(int(headers["content-length"]))
        return Answer(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self) -> bool:
        try:
            async with asyncio.timeout(10):
                return await self.reader.read(65536) == b""
        except ConnectionResetError:
            return True


@contextlib.asynccontextmanager
async def connect(base: str) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    try:
        yield Conn(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def request_head(path: str, *, length: int | None = None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += ["Transfer-Encoding: chunked"] if length is None else [f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(data: bytes, size: int = 16384, *, last: bool = True) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if last:
        yield b"0\r\n\r\n"


async def get_healthz(conn: Conn) -> Answer:
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return await conn.answer()


async def test_an_unauthenticated_20_mb_body_is_413_before_any_read_and_the_connection_closed(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with connect(base) as sock:
            await sock.send(request_head("/v1/replay", length=TWENTY_MB) + b" " * 4096)  # the rest never comes
            answer = await sock.answer()
            assert answer.status == 413, answer.body
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["reason"] == "too_large" and answer.json()["status"] == 413
            assert answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_a_body_just_over_the_cap_is_drained_and_the_connection_serves_the_next_request(tmp_path: Path) -> None:
    body = b"{" + b" " * API_MAX_BYTES + b"}"
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with connect(base) as sock:
            await sock.send(request_head("/v1/replay", length=len(body), headers=AUTH["operate"]) + body)
            answer = await sock.answer()
            assert answer.status == 413 and answer.json()["reason"] == "too_large"
            assert "connection" not in answer.headers
            assert (await get_healthz(sock)).status == 200
        async with connect(base) as sock:  # chunked, no length announced: the same
            await sock.send(request_head("/v1/replay", headers=AUTH["operate"]) + b"".join(chunked(body)))
            answer = await sock.answer()
            assert answer.status == 413 and "connection" not in answer.headers
            assert (await get_healthz(sock)).status == 200


async def test_a_chunked_body_past_twice_the_cap_is_413_with_connection_close(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with connect(base) as sock:
            await sock.send(request_head("/v1/replay"))
            for piece in chunked(b" " * (3 * API_MAX_BYTES), last=False):  # and never the last chunk
                await sock.send(piece)
            answer = await sock.answer()
            assert answer.status == 413 and answer.json()["reason"] == "too_large"
            assert answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_a_body_within_the_cap_still_works(tmp_path: Path) -> None:
    padded = b'{"dry_run": true' + b" " * (API_MAX_BYTES - 100) + b"}"
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            ok = await client.post(
                "/v1/replay", content=padded, headers={**AUTH["operate"], "Content-Type": "application/json"}
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["dry_run"] is True

            async def pieces() -> Any:
                for piece in (padded[:30000], padded[30000:]):
                    yield piece

            streamed = await client.post(
                "/v1/replay", content=pieces(), headers={**AUTH["operate"], "Content-Type": "application/json"}
            )
            assert streamed.status_code == 200, streamed.text
            refused = await client.post("/v1/replay", content=padded, headers={"Content-Type": "application/json"})
            assert refused.status_code == 401  # within the cap, the authentication decides


async def test_a_console_form_over_the_cap_gets_the_error_page_before_the_session_check(tmp_path: Path) -> None:
    form = b"csrf=x&id=" + b"1" * (API_MAX_BYTES + 10)
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as browser:
            for path in ("/dead-letters/replay", "/logout", "/login"):
                page = await browser.post(
                    path, content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
                assert page.status_code == 413, (path, page.status_code)
                assert page.headers["content-type"].startswith("text/html")
                assert "Formulaire trop volumineux." in page.text
        async with connect(base) as sock:
            head = request_head("/dead-letters/replay", length=TWENTY_MB)
            await sock.send(head.replace(b"application/json", b"application/x-www-form-urlencoded") + b"csrf=")
            answer = await sock.answer()
            assert answer.status == 413 and answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_the_cda_route_keeps_its_own_cap_and_does_not_read_a_huge_body(tmp_path: Path) -> None:
    cap = 4 * API_MAX_BYTES  # above the API's cap: /v1/documents is not under it
    xml = b"<?xml version='1.0'?><!-- " + b"x" * (2 * API_MAX_BYTES) + b" --><x/>"
    async with running_gateway(tmp_path / "gw", NOWHERE, **{"cda.max_bytes": cap}) as (_gw, base):
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["intake"]) as client:
            within = await client.post("/v1/documents", content=xml, headers={"Content-Type": "application/xml"})
            assert within.status_code != 413 and within.json()["reason"] != "too_large"
        async with connect(base) as sock:
            head = request_head("/v1/documents", length=TWENTY_MB, headers=AUTH["intake"])
            await sock.send(head.replace(b"application/json", b"application/xml") + b"<")
            answer = await sock.answer()
            assert answer.status == 413 and answer.json()["reason"] == "too_large"
            assert answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_a_client_waiting_for_100_continue_is_refused_without_being_asked_for_the_body(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with connect(base) as sock:
            head = request_head("/v1/replay", length=API_MAX_BYTES + 10, headers={"Expect": "100-continue"})
            await sock.send(head)  # and no body: it waits for "100 Continue"
            answer = await sock.answer()
            assert answer.status == 413 and answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_an_unauthenticated_cda_over_its_cap_is_413_before_the_401(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", NOWHERE, **{"cda.max_bytes": 4 * API_MAX_BYTES}) as (_gw, base):
        async with connect(base) as sock:
            head = request_head("/v1/documents", length=TWENTY_MB)  # no token
            await sock.send(head.replace(b"application/json", b"application/xml") + b"<")
            answer = await sock.answer()
            assert answer.status == 413 and answer.json()["reason"] == "too_large"
            assert answer.headers["connection"] == "close"
            assert await sock.closed_by_server()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
    assert 'passerelle_intake_rejections_total{channel="http",reason="too_large"} 1.0' in metrics


async def test_an_unauthenticated_chunked_cda_gets_its_401_and_the_rest_is_not_read(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", NOWHERE) as (_gw, base):
        async with connect(base) as sock:
            head = request_head("/v1/documents")  # chunked, no token
            await sock.send(head.replace(b"application/json", b"application/xml"))
            await sock.send(next(chunked(b"<" * 16384, last=False)))  # and the rest never comes
            answer = await sock.answer()
            assert answer.status == 401 and answer.headers["connection"] == "close"
            assert await sock.closed_by_server()


async def test_a_body_that_stops_coming_is_408_with_connection_close(tmp_path: Path) -> None:
    """B-HTTP-8: 1000 bytes announced, a few sent, then nothing: past ``http.body_timeout_s`` the API
    answers a 408 problem, the console its error page, each with ``Connection: close``, and the server
    closes the connection (uvicorn alone would wait for the rest for ever). Not a timing assertion: the
    deadline is 0.5 s, the client waits up to 10 s for the answer."""
    async with running_gateway(tmp_path / "gw", NOWHERE, **{"http.body_timeout_s": 0.5}) as (_gw, base):
        async with connect(base) as sock:
            await sock.send(request_head("/v1/replay", length=1000) + b'{"sta')
            answer = await sock.answer()
            assert answer.status == 408 and answer.headers["connection"] == "close"
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["reason"] == "body_timeout"
            assert answer.json()["detail"] == "request body not received within 0.5 s"
            assert await sock.closed_by_server()
        async with connect(base) as sock:
            head = request_head("/login", length=1000).replace(
                b"application/json", b"application/x-www-form-urlencoded"
            )
            await sock.send(head + b"csrf=ab")
            answer = await sock.answer()
            assert answer.status == 408 and answer.headers["connection"] == "close"
            assert answer.headers["content-type"].startswith("text/html")
            assert "Formulaire reçu trop lentement" in answer.body.decode()
            assert await sock.closed_by_server()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
            assert (await client.post("/v1/replay", json={"states": ["dead"]}, headers=AUTH["operate"])).is_success
    assert 'passerelle_http_body_refusals_total{reason="body_timeout",surface="api"} 1.0' in metrics
    assert 'passerelle_http_body_refusals_total{reason="body_timeout",surface="console"} 1.0' in metrics
