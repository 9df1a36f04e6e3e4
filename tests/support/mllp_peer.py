"""A test MLLP peer: the envelope bytes (written here, independently of the gateway's constants, to build
broken frames byte by byte), reading reply frames, and sending messages one at a time on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl

from passerelle.mappings.hl7v2.mllp import frame

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The payload of the next frame: read to FS CR, junk before the first VT dropped."""
    data = await reader.readuntil(FS + CR)
    return data[data.index(VT) + 1 : -2]


async def read_replies(reader: asyncio.StreamReader, n: int, timeout: float = 10.0) -> list[bytes]:
    """The payloads of the next ``n`` reply frames."""
    async with asyncio.timeout(timeout):
        return [await read_frame(reader) for _ in range(n)]


def msa(reply: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of a reply payload."""
    m = re.search(rb"\rMSA\|([A-Z]{2})\|([^|\r]*)", reply)
    assert m, reply[:200]
    return m.group(1).decode(), m.group(2).decode()


async def write_in_pieces(
    writer: asyncio.StreamWriter, data: bytes, rng: random.Random, max_piece: int, pause_chance: float = 0.0
) -> None:
    """Write ``data`` in pieces of 1 to ``max_piece`` bytes (split points drawn from ``rng``), draining after
    each; with ``pause_chance``, yield to the loop after a piece with that probability."""
    pos = 0
    while pos < len(data):
        step = rng.randint(1, max_piece)
        writer.write(data[pos : pos + step])
        await writer.drain()
        pos += step
        if pause_chance and rng.random() < pause_chance:
            await asyncio.sleep(0)


async def exchange(
    port: int,
    payloads: list[bytes],
    *,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> list[bytes]:
    """Send each payload in a frame on one connection to 127.0.0.1:``port``, waiting for its reply
    (``timeout`` seconds each) before the next; the reply payloads, in order."""
    hostname = "localhost" if ssl_context is not None else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context, server_hostname=hostname)
    try:
        replies = []
        for payload in payloads:
            writer.write(frame(payload))
            await writer.drain()
            replies += await read_replies(reader, 1, timeout=timeout)
        return replies
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)
