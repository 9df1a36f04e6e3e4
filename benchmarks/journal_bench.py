"""Journal append benchmark: durable appends per second, SQLite vs PostgreSQL, on this machine.

Each caller appends one ~2 KB message at a time and waits for the commit (what an MLLP connection
does before its ACK), with its own dedup key and one of 100 patient lanes. Appends are
group-committed by both backends, so more concurrent callers share each commit. Each cell runs for a
bounded time (``--seconds``) on a fresh journal (a temporary SQLite file; a throw-away PostgreSQL
schema, dropped afterwards) and reports appends/s and commit latency p50/p99.

Run: ``python -m benchmarks.journal_bench [--quick] [--seconds S] [--callers 1,8] [--dsn DSN]``.
PostgreSQL is skipped (and said so) when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.results import publish
from passerelle.queue import Inbound
from passerelle.queue.postgres import PostgresJournal
from passerelle.queue.sqlite import SQLiteJournal

DEFAULT_DSN = os.environ.get("PASSERELLE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
OBX = "OBX|{n}|NM|2345-7^Glucose^LN||{v}|mmol/L|3.9-5.8|N|||F\r"


def message(n: int) -> Inbound:
    body = "".join(OBX.format(n=i, v=4 + (n + i) % 30 / 10) for i in range(1, 36))
    raw = f"MSH|^~\\&|LAB|FAC|GW|FAC|20261122040000||ORU^R01|B{n}|P|2.5\r{body}".encode()
    return Inbound(
        raw=raw, channel="mllp", sender="LAB^FAC", kind="oru", message_id=f"B{n}", dedup_key=f"LAB^FAC^B{n}",
        content_hash=hashlib.sha256(raw).hexdigest(), lane=f"patient-{n % 100}", ack=b"MSA|AA|B%d" % n,
    )  # fmt: skip


@dataclass
class Cell:
    backend: str
    callers: int
    appends: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.appends / self.seconds if self.seconds else 0.0


@asynccontextmanager
async def sqlite_journal(_: str) -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory(prefix="journal-bench-") as tmp:
        j = SQLiteJournal(Path(tmp) / "journal.sqlite3")
        await j.open()
        try:
            yield j
        finally:
            await j.close()


@asynccontextmanager
async def postgres_journal(dsn: str) -> AsyncIterator[Any]:
    schema = f"bench_{uuid.uuid4().hex}"
    j = PostgresJournal(dsn, schema=schema)
    await j.open()
    try:
        yield j
    finally:
        await j.close()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def run_cell(backend: str, factory: Callable[[str], Any], dsn: str, callers: int, seconds: float) -> Cell:
    async with factory(dsn) as journal:
        counter = iter(range(10**9))
        await journal.append([message(next(counter))])  # warm up: connections, prepared statements
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def caller() -> None:
            while loop.time() < stop_at:
                item = message(next(counter))
                t0 = time.perf_counter()
                await journal.append([item])
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - start
    qs = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return Cell(backend, callers, len(latencies), elapsed, qs[49] * 1000, qs[98] * 1000)


async def reachable(dsn: str) -> str:
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=3)
    except psycopg.Error as exc:
        return f"unreachable ({type(exc).__name__})"
    await conn.close()
    return ""


async def run(args: argparse.Namespace) -> list[Cell]:
    backends: list[tuple[str, Callable[[str], Any]]] = [("sqlite", sqlite_journal)]
    why = await reachable(args.dsn)
    if why:
        print(f"postgres: skipped, server at {args.dsn} {why}")
    else:
        backends.append(("postgres", postgres_journal))
    cells = []
    for callers in args.callers:
        for name, factory in backends:
            cells.append(await run_cell(name, factory, args.dsn, callers, args.seconds))
    return cells


def table(cells: list[Cell]) -> str:
    lines = [
        "| backend | callers | appends | appends/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        lines.append(f"| {c.backend} | {c.callers} | {c.appends} | {c.rate:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} |")
    return "\n".join(lines)


BEGIN, STOP = "<!-- journal-bench:begin -->", "<!-- journal-bench:end -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.journal_bench")
    parser.add_argument("--quick", action="store_true", help="1 s per cell")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each cell")
    parser.add_argument("--callers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 1.0
    cells = asyncio.run(run(args))
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}), by `python -m benchmarks.journal_bench`: "
        f"concurrent callers each appending one ~2 KB message and waiting for its durable commit, "
        f"{args.seconds:g} s per cell. SQLite: WAL + `synchronous=FULL`; PostgreSQL: the local server, "
        "`synchronous_commit=on`."
    )
    section = "\n".join(
        [BEGIN, "## Journal appends (durable commit per caller)", "", header, "", table(cells), "", STOP]
    )
    publish(section, BEGIN, STOP, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
