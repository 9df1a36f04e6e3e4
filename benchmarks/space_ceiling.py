"""A minimal patient space for the delivery ceiling of :mod:`benchmarks.pipeline_bench`.

A bare asyncio HTTP/1.1 server (keep-alive, ``Content-Length`` bodies only) that answers what the
gateway's MHD client needs, as cheaply as one process can: ``GET …/Patient/$dmp-status`` gets an
``ACTIF`` Parameters resource, ``POST …/fhir`` a valid ``transaction-response`` (one entry per request
entry, in request order: SubmissionSet ``List``, ``DocumentReference``, ``Binary``). It stores nothing
but the ``Idempotency-Key`` of each push, in arrival order, so the benchmark can check exactly-once
and per-patient order (``GET /stats``, ``GET /keys``). It checks nothing: it is the ceiling of what the
gateway can push, apart from a real space's own cost.

``push_ceiling`` is the other side of the same ceiling: a bare asyncio client posting ready-made
bundles over keep-alive connections, i.e. what one core can push with no journal, mapping or policy.

Run: ``python -m benchmarks.space_ceiling --port P`` (used by the benchmark, in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

_STATUS = json.dumps(
    {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "status", "valueCode": "ACTIF"},
            {"name": "opposed", "valueBoolean": False},
            {"name": "authorBlocked", "valueBoolean": False},
            {"name": "minor", "valueBoolean": False},
        ],
    }
).encode()


def _transaction_response(n: int) -> bytes:
    entries = [
        {"response": {"status": "201 Created", "location": f"{kind}/{n}"}}
        for kind in ("List", "DocumentReference", "Binary")
    ]
    return json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries}).encode()


class CeilingSpace:
    """Per-connection protocol state is the stream; the space itself only counts and remembers keys."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.statuses = 0
        self.first_at = 0.0
        self.last_at = 0.0

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, _, rest = head.partition(b"\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in rest.split(b"\r\n") if h)
                }
                length = int(headers.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""
                writer.write(self.answer(line, headers, body))
                await writer.drain()
        writer.close()

    def answer(self, line: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        method, _, rest = line.partition(b" ")
        path = rest.split(b" ", 1)[0]
        if method == b"POST":
            now = time.time()
            self.first_at = self.first_at or now
            self.last_at = now
            self.keys.append(headers.get(b"idempotency-key", b"").decode())
            return _reply(200, _transaction_response(len(self.keys)), b"application/fhir+json")
        if b"$dmp-status" in path:
            self.statuses += 1
            return _reply(200, _STATUS, b"application/fhir+json")
        if path.startswith(b"/stats"):
            stats = {"pushes": len(self.keys), "statuses": self.statuses, "first": self.first_at, "last": self.last_at}
            return _reply(200, json.dumps(stats).encode(), b"application/json")
        if path.startswith(b"/keys"):
            return _reply(200, json.dumps(self.keys).encode(), b"application/json")
        return _reply(404, b"{}", b"application/json")


def _reply(status: int, body: bytes, content_type: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, content_type, len(body))
        + body
    )


async def serve(port: int) -> None:
    space = CeilingSpace()
    server = await asyncio.start_server(space.connection, "127.0.0.1", port, limit=1 << 22, backlog=1024)
    async with server:
        await server.serve_forever()


async def push_ceiling(port: int, bodies: list[bytes], connections: int) -> float:
    """Post every body over ``connections`` keep-alive connections (one request in flight on each);
    returns requests per second."""
    queue = list(reversed(bodies))

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        while queue:
            body = queue.pop()
            writer.write(
                b"POST /fhir HTTP/1.1\r\nhost: space\r\ncontent-type: application/fhir+json\r\n"
                b"idempotency-key: ceiling\r\ncontent-length: %d\r\n\r\n" % len(body) + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return len(bodies) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.space_ceiling")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
