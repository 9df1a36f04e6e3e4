"""The console's reads on a journal of 1,000,000 rows (ADR 0025): one page of the message list with each
filter, a deep page, and the overview's counts, on SQLite and PostgreSQL, with the query plans.

The rows are written straight into the tables (the schema of the journal's migrations), spread over 400
days with ids in time order, like a journal a year into production: 4 channels (70 % MLLP), 50 senders
plus a rare one, 95 % delivered, 3 % rejected, 1 % refused, 0.5 % dead, 0.5 % parked, 100,000 patients.
Every read goes through the journal's own port (``find``, ``counts``, ``activity``, ``oldest_pending``);
each is timed 5 times and the median kept. This is a measurement, not a test: nothing asserts a time.

Run: ``python -m benchmarks.console_paging [--rows N] [--dsn DSN] [--no-write]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.journal_bench import DEFAULT_DSN, postgres_journal, reachable, sqlite_journal
from benchmarks.results import publish
from passerelle.queue import _rows, _sql
from passerelle.queue.model import Query, State

NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=400)
CHANNELS = ["mllp"] * 14 + ["http"] * 3 + ["folder"] * 2 + ["dicom"]
STATES = [State.DELIVERED] * 190 + [State.REJECTED] * 6 + [State.REFUSED] * 2 + [State.DEAD, State.PARKED]
RARE_SENDER = "RARE^LAB"
COLUMNS = ("id", "received_at", "updated_at", "channel", "sender", "kind", "message_id", "dedup_key", "lane",
           "state", "detail", "patient_id", "raw", "size", "sha256")  # fmt: skip


def synthetic_rows(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    step = SPAN / count
    for n in range(1, count + 1):
        at = NOW - SPAN + step * n
        state = rng.choice(STATES)
        sender = RARE_SENDER if n % 100_000 == 0 else f"LAB{rng.randrange(50)}^FAC"
        patient = f"2{rng.randrange(100_000):014d}"
        yield (n, at, at + timedelta(seconds=2), rng.choice(CHANNELS), sender, "oru", f"M{n}",
               f"{sender}^M{n}" if state is not State.REJECTED else "", f"ins:{patient}", state.value,
               "deadline" if state is State.DEAD else "", patient, b"", 2048, "0" * 64)  # fmt: skip


def queries(count: int) -> dict[str, Query]:
    week = NOW - timedelta(days=200)
    return {
        "newest page": Query(limit=50),
        "deep page (before id 1,000)": Query(limit=50, before_id=1_000),
        "newer page (after id 500,000)": Query(limit=50, after_id=500_000),
        "state dead": Query(states=[State.DEAD], limit=50),
        "state dead, deep": Query(states=[State.DEAD], limit=50, before_id=count // 10),
        "channel dicom": Query(channel="dicom", limit=50),
        "sender (common)": Query(sender="LAB7^FAC", limit=50),
        "sender (rare: 10 rows)": Query(sender=RARE_SENDER, limit=50),
        "one week, 200 days ago": Query(since=week, until=week + timedelta(days=7), limit=50),
        "one week + state refused": Query(states=[State.REFUSED], since=week, until=week + timedelta(days=7), limit=50),
        "since 300 days ago (wide range)": Query(since=NOW - timedelta(days=300), limit=50),
        "patient": Query(patient_id="200000000004242", limit=50),
    }


async def timed(call: Callable[[], Awaitable[Any]], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def seed_sqlite(journal: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    conn = journal.conn
    marks = ", ".join("?" * len(COLUMNS))
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO messages ({', '.join(COLUMNS)}) VALUES ({marks})",
                         [(r[0], r[1].timestamp(), r[2].timestamp(), *r[3:]) for r in batch])  # fmt: skip
        conn.executemany("INSERT INTO payloads (row_id, raw) VALUES (?, ?)", [(r[0], b"MSH|") for r in batch])
        conn.execute("COMMIT")

    for row in rows:
        batch.append(row)
        if len(batch) == 50_000:
            await journal._call(flush)
            batch = []
    if batch:
        await journal._call(flush)


async def seed_postgres(journal: Any, rows: Iterator[tuple[Any, ...]]) -> None:
    async with journal._conn() as conn, conn.cursor() as cur:
        async with cur.copy(f"COPY messages ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
        await cur.execute("INSERT INTO payloads (row_id, raw) SELECT id, 'MSH|'::bytea FROM messages")
        await cur.execute("SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages))")
        await cur.execute("ANALYZE messages")


async def plan(backend: str, journal: Any, query: Query) -> str:
    mark = "?" if backend == "sqlite" else "%s"
    when = (lambda d: d.timestamp()) if backend == "sqlite" else (lambda d: d)
    where, params = _rows.query_filters(query, mark, when)
    statement = _sql.find(_rows.upward(query)).format(where=where)
    params.append(_rows.page_size(query))
    if backend == "sqlite":
        rows = await journal._call(lambda: journal.conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall())
        return "; ".join(r[-1] for r in rows)
    rows = await journal._fetchall(f"EXPLAIN {_sql.pg(statement)}", tuple(params))
    return "; ".join(r[0].strip() for r in rows if "Scan" in r[0] or "Sort" in r[0])


async def measure(backend: str, factory: Callable[[str], Any], dsn: str, count: int) -> list[tuple[str, float, str]]:
    async with factory(dsn) as journal:
        start = time.perf_counter()
        await (seed_sqlite if backend == "sqlite" else seed_postgres)(journal, synthetic_rows(count))
        print(f"{backend}: {count:,} rows seeded in {time.perf_counter() - start:.0f} s")
        out = []
        for name, query in queries(count).items():
            ms = await timed(lambda q=query: journal.find(q))  # type: ignore[misc]
            out.append((name, ms, await plan(backend, journal, query)))
        for name, call in (
            ("overview: counts by state", journal.counts),
            ("overview: activity, last hour", lambda: journal.activity(NOW - timedelta(hours=1))),
            ("overview: activity, last 24 h", lambda: journal.activity(NOW - timedelta(days=1))),
            ("overview: oldest pending", journal.oldest_pending),
        ):
            out.append((name, await timed(call), ""))
        return out


BEGIN, STOP = "<!-- console-paging:begin -->", "<!-- console-paging:end -->"


def section(results: dict[str, list[tuple[str, float, str]]], count: int) -> str:
    lines = [BEGIN, f"## Console pages on a journal of {count:,} rows", "",
             f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} CPUs, "
             f"{platform.python_implementation()} {platform.python_version()}), by `python -m benchmarks.console_paging`: "
             "one page of 50 rows through `BrowserJournal.find` (keyset on id), median of 5, ms; the query plan "
             "of each page.", ""]  # fmt: skip
    backends = list(results)
    lines.append(
        "| read | " + " | ".join(f"{b} ms" for b in backends) + " | " + " | ".join(f"{b} plan" for b in backends) + " |"
    )
    lines.append("| --- |" + " ---: |" * len(backends) + " --- |" * len(backends))
    for i, (name, _, _) in enumerate(results[backends[0]]):
        cells = [f"{results[b][i][1]:.1f}" for b in backends] + [
            f"`{results[b][i][2]}`" if results[b][i][2] else "" for b in backends
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", STOP])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_paging")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else args.rows

    async def run() -> dict[str, list[tuple[str, float, str]]]:
        out = {"sqlite": await measure("sqlite", sqlite_journal, args.dsn, count)}
        why = await reachable(args.dsn)
        if why:
            print(f"postgres: skipped, server at {args.dsn} {why}")
        else:
            out["postgres"] = await measure("postgres", postgres_journal, args.dsn, count)
        return out

    publish(section(asyncio.run(run()), count), BEGIN, STOP, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
