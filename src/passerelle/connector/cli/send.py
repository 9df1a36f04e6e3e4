"""``passerelle send``: an MLLP sender for people testing an interface (one connection, in order)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from passerelle.adapters.mllp_client import AckMismatchError, parse_ack
from passerelle.mappings.hl7v2.mllp import END_BLOCK, FS, START_BLOCK, frame, reply_payload

_MSH_START = re.compile(rb"(?:^|[\r\n])(MSH[^A-Za-z0-9\r\n])")


def split_messages(data: bytes) -> list[bytes]:
    """Messages in a file: MLLP frames if the file is framed, else one message per ``MSH`` segment.

    The bytes of each message are kept as they are (separators included): the listener normalises.
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    if START_BLOCK in data:
        out = []
        for chunk in data.split(START_BLOCK)[1:]:
            end = chunk.find(FS)
            if end >= 0 and chunk[:end].strip():
                out.append(chunk[:end])
        return out
    starts = [m.start(1) for m in _MSH_START.finditer(data)]
    messages = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        body = data[start:end].rstrip(b"\r\n")
        if body:
            messages.append(body + b"\r")
    return messages


@dataclass(frozen=True)
class SendResult:
    code: str  # MSA-1, or "--" when no reply came
    control_id: str  # MSA-2
    source: str


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    data = await reader.readuntil(END_BLOCK)
    payload = reply_payload(data)
    return data[: -len(END_BLOCK)] if payload is None else payload


async def send_files(
    host: str,
    port: int,
    items: Sequence[tuple[str, bytes]],
    *,
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> list[SendResult]:
    """Send every message of every item over one connection, waiting for each ACK before the next."""
    results: list[SendResult] = []
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ssl_context), timeout)
    try:
        for source, data in items:
            for message in split_messages(data):
                writer.write(frame(message))
                await writer.drain()
                try:
                    payload = await asyncio.wait_for(_read_reply(reader), timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    results.append(SendResult("--", "", source))
                    return results
                try:
                    ack = parse_ack(payload)
                except AckMismatchError:
                    results.append(SendResult("??", "", source))
                    continue
                results.append(SendResult(ack.code, ack.control_id, source))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return results
