"""What only the PostgreSQL journal promises: several gateway instances on one schema.

Runs against the real server (tests/support/pg.py); every test gets its own schema.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from passerelle.errors import QueueUnavailableError
from passerelle.queue import Inbound, Settlement, State
from passerelle.queue.postgres import PostgresJournal
from tests.support.pg import admin_connection, pg_schema

EXPECTED_TABLES = {
    "payloads",
    "consent_registry",
    "dedup",
    "document_series",
    "events",
    "lanes",
    "messages",
    "patient_map",
    "schema_migrations",
    "workers",
}


def item(n: int, lane: str = "p1", *, body: bytes | None = None, sender: str = "LAB^FAC") -> Inbound:
    raw = body if body is not None else f"MSH|^~\\&|LAB|FAC|||||ORU^R01|{n}|P|2.5\r".encode()
    return Inbound(
        raw=raw, channel="mllp", sender=sender, kind="oru", message_id=str(n), dedup_key=f"{sender}^{n}",
        content_hash=hashlib.sha256(raw).hexdigest(), lane=lane, ack=f"ACK{n}".encode(),
    )  # fmt: skip


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresJournal, PostgresJournal, str]]:
    """Two journals (two gateway instances) on one fresh schema."""
    async with pg_schema() as (dsn, schema):
        a = PostgresJournal(dsn, schema=schema, pool_size=4, committers=2)  # overlapping commits too
        b = PostgresJournal(dsn, schema=schema, pool_size=4)
        await asyncio.gather(a.open(), b.open())  # both migrate at once: one applies, one waits
        try:
            yield a, b, schema
        finally:
            await a.close()
            await b.close()


async def _scalar(schema: str, query: str, *params: object) -> object:
    conn = await admin_connection()
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        rec = await cur.fetchone()
        return rec[0] if rec else None
    finally:
        await conn.close()


# --- migrations -------------------------------------------------------------------------------------


async def test_migrations_create_the_expected_tables_once() -> None:
    async with pg_schema() as (dsn, schema):
        j = PostgresJournal(dsn, schema=schema)
        await j.open()
        await j.close()
        conn = await admin_connection()
        try:
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            )
            assert {r[0] for r in await cur.fetchall()} == EXPECTED_TABLES
            cur = await conn.execute(f'SELECT version, name FROM "{schema}".schema_migrations ORDER BY version')
            assert await cur.fetchall() == [
                (1, "0001_journal.sql"),
                (2, "0002_retention.sql"),
                (3, "0003_browser.sql"),
                (4, "0004_workers.sql"),
            ]
        finally:
            await conn.close()
        again = PostgresJournal(dsn, schema=schema)
        await again.open()  # nothing re-applied (a second CREATE TABLE would fail)
        assert await again.counts() == dict.fromkeys(State, 0)
        await again.close()
        assert await _scalar(schema, "SELECT count(*) FROM schema_migrations") == 4


async def test_concurrent_opens_migrate_once(pair: tuple[PostgresJournal, PostgresJournal, str]) -> None:
    a, b, schema = pair
    assert await _scalar(schema, "SELECT count(*) FROM schema_migrations") == 4
    [res] = await a.append([item(1)])
    assert (await b.get(res.row_id)) is not None


async def test_unreachable_server_raises_queue_unavailable() -> None:
    j = PostgresJournal("postgresql://127.0.0.1:1/test", connect_timeout=2)
    with pytest.raises(QueueUnavailableError) as info:
        await j.open()
    assert isinstance(info.value.__cause__, psycopg.Error)
    with pytest.raises(QueueUnavailableError):
        await j.append([item(1)])


# --- several instances --------------------------------------------------------------------------------


async def test_two_instances_never_claim_the_same_lane(pair: tuple[PostgresJournal, PostgresJournal, str]) -> None:
    a, b, _ = pair
    lanes = [f"p{n}" for n in range(60)]
    await a.append([item(n, lanes[n % 60]) for n in range(120)])  # two messages per lane
    now = later(1)
    got: dict[str, list[str]] = {"a": [], "b": []}

    async def drain(name: str, j: PostgresJournal) -> None:
        while True:
            rows = await j.claim(name, 3, 300, now)
            if not rows:
                return
            got[name].extend(r.lane for r in rows)

    await asyncio.gather(drain("a", a), drain("b", b), drain("a", a), drain("b", b))
    claimed = got["a"] + got["b"]
    assert sorted(claimed) == sorted(lanes)  # every lane once, nobody twice (heads only, leased)
    assert got["a"] and got["b"]


async def test_concurrent_duplicates_from_two_instances_make_one_row(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, b, schema = pair
    keys = range(80)
    # Same keys from both instances at once, in opposite orders, in several concurrent batches.
    results = await asyncio.gather(
        *(a.append([item(n, f"p{n % 7}")]) for n in keys),
        *(b.append([item(n, f"p{n % 7}")]) for n in reversed(keys)),
    )
    by_key: dict[int, list[tuple[int, bool]]] = {}
    for res in results:
        [r] = res
        by_key.setdefault(r.row_id, []).append((r.row_id, r.duplicate))
    assert len(by_key) == 80
    for answers in by_key.values():
        assert sorted(dup for _, dup in answers) == [False, True]  # one writer, one duplicate
    assert await _scalar(schema, "SELECT count(*) FROM messages") == 80
    assert await _scalar(schema, "SELECT count(*) FROM dedup") == 80
    # Different bytes under a known key from the other instance: a conflict, still one row.
    [clash] = await b.append([item(3, "p3", body=b"MSH|other")])
    assert clash.conflict and clash.stored_ack == b"ACK3"
    assert await _scalar(schema, "SELECT count(*) FROM messages") == 80


async def test_expired_lease_comes_back_to_the_other_instance(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, b, _ = pair
    [res] = await a.append([item(1)])
    now = later(1)
    assert [r.id for r in await a.claim("gw-a", 10, 5, now)] == [res.row_id]
    assert await b.claim("gw-b", 10, 5, now + timedelta(seconds=2)) == []
    back = await b.claim("gw-b", 10, 5, now + timedelta(seconds=6))
    assert [r.id for r in back] == [res.row_id]
    await b.settle(res.row_id, Settlement(State.DELIVERED), now + timedelta(seconds=7))
    assert (await a.get(res.row_id)).state is State.DELIVERED  # type: ignore[union-attr]


async def test_lanes_stay_in_order_while_two_instances_append_and_drain(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, b, schema = pair
    total = 150
    delivered: dict[str, list[int]] = {}
    appended = asyncio.Event()

    async def produce(j: PostgresJournal, start: int) -> None:
        for n in range(start, total, 2):
            await j.append([item(n, f"p{n % 3}")])

    async def consume(name: str, j: PostgresJournal) -> None:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + 60
        while loop.time() < stop_at:
            rows = await j.claim(name, 2, 300, later(1))
            for r in rows:
                delivered.setdefault(r.lane, []).append(r.id)
                await j.settle(r.id, Settlement(State.DELIVERED), later(1))
            if not rows:
                if appended.is_set() and sum(len(v) for v in delivered.values()) >= total:
                    return
                await asyncio.sleep(0.01)

    async def producers() -> None:
        await asyncio.gather(produce(a, 0), produce(b, 1))
        appended.set()

    await asyncio.gather(producers(), consume("a", a), consume("b", b))
    assert sum(len(v) for v in delivered.values()) == total
    for ids in delivered.values():
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # one head at a time, lowest id first
    assert await _scalar(schema, "SELECT count(*) FROM lanes") == 0
    assert await _scalar(schema, "SELECT count(*) FROM messages WHERE state = 'delivered'") == total


async def test_append_takes_the_lane_before_the_id(pair: tuple[PostgresJournal, PostgresJournal, str]) -> None:
    """Another transaction holds the lane: the append waits *before* taking an id, so an id taken
    meanwhile by the holder (as a concurrent append to that lane would) is lower than the new row's."""
    a, _, schema = pair
    [first] = await a.append([item(1, "p1")])
    holder, watcher = await admin_connection(), await admin_connection()
    try:
        await holder.execute(f'SET search_path TO "{schema}"')
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM lanes WHERE lane = 'p1' FOR UPDATE")
            cur = await holder.execute("SELECT pg_backend_pid()")
            holder_pid = (await cur.fetchone())[0]  # type: ignore[index]
            pending = asyncio.create_task(a.append([item(2, "p1")]))
            for _ in range(1000):  # until the append's backend is waiting on the holder's lock
                # (from another connection: pg_stat_activity is a snapshot inside a transaction)
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (holder_pid,)
                )
                if (await cur.fetchone())[0]:  # type: ignore[index]
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the append never waited for the lane lock")
            cur = await holder.execute("SELECT nextval('messages_id_seq')")
            taken_meanwhile = (await cur.fetchone())[0]  # type: ignore[index]
        [second] = await pending
    finally:
        await holder.close()
        await watcher.close()
    assert first.row_id < taken_meanwhile < second.row_id


async def test_requeue_and_settle_keep_the_lane_consistent_across_instances(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, b, _ = pair
    r = await a.append([item(1, "p1"), item(2, "p1")])
    await b.claim("gw-b", 10, 30, later(1))
    await b.settle(r[0].row_id, Settlement(State.DEAD, "deadline"), later(1))
    assert await a.claim("gw-a", 10, 30, later(2)) == []
    assert await a.requeue(r[0].row_id, later(2), "operator replay")
    assert not await b.requeue(r[0].row_id, later(2), "twice")  # already accepted again
    assert [x.id for x in await b.claim("gw-b", 10, 30, later(3))] == [r[0].row_id]


# --- failures -----------------------------------------------------------------------------------------


async def test_a_failing_caller_does_not_fail_the_others_in_its_commit(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, _, schema = pair
    conn = await admin_connection()
    try:
        await conn.execute(
            f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN '
            "IF NEW.sender = 'BAD' THEN RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF; "
            "RETURN NEW; END $$"
        )
        await conn.execute(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".messages FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()'
        )
    finally:
        await conn.close()
    outcomes = await asyncio.gather(
        *(a.append([item(n, f"p{n}")]) for n in range(10)),
        a.append([item(99, sender="BAD")]),
        *(a.append([item(n, f"p{n}")]) for n in range(10, 20)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], QueueUnavailableError)
    assert isinstance(failed[0].__cause__, psycopg.Error)
    assert "refused" not in str(failed[0])  # no database text (it may carry values) in our errors
    assert await _scalar(schema, "SELECT count(*) FROM messages") == 20


async def test_text_the_database_cannot_hold_is_kept_readable(
    pair: tuple[PostgresJournal, PostgresJournal, str],
) -> None:
    a, _, _ = pair
    bad = Inbound(raw=b"MSH|\x00", channel="mllp", sender="LAB\x00FAC", kind="oru", message_id="1\udcff", lane="p1")
    [res] = await a.append([bad])
    row = await a.get(res.row_id)
    assert row is not None and row.raw == b"MSH|\x00" and "\x00" not in row.sender


async def test_a_dropped_connection_fails_one_call_then_the_journal_reconnects() -> None:
    async with pg_schema() as (dsn, schema):
        app = f"gw-{schema}"
        j = PostgresJournal(f"{dsn}?application_name={app}", schema=schema, pool_size=1, committers=1)
        await j.open()
        try:
            [first] = await j.append([item(1, "p1")])
            assert await j.get(first.row_id) is not None  # the pool's connection exists too
            admin = await admin_connection()
            try:
                cur = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (app,)
                )
                assert (await cur.fetchone())[0] == 2  # type: ignore[index]
            finally:
                await admin.close()
            with pytest.raises(QueueUnavailableError) as info:
                await j.append([item(2, "p2")])
            assert isinstance(info.value.__cause__, psycopg.OperationalError)
            with pytest.raises(QueueUnavailableError):
                await j.get(first.row_id)
            [second] = await j.append([item(2, "p2")])  # new connections, same answers as before
            assert not second.duplicate
            assert [r.id for r in await j.claim("gw", 10, 30, later(1))] == [first.row_id, second.row_id]
        finally:
            await j.close()


async def test_migration_2_moves_payloads_and_records_size_and_sha256() -> None:
    """A schema made by the previous release (migration 1, rows in it) is brought up to date at open."""
    import hashlib

    from passerelle.queue import _pg, migrations

    junk, good = bytes(range(256)) * 400, b"MSH|^~\\&|LAB|FAC|||||ORU^R01|1|P|2.5\r"
    async with pg_schema() as (dsn, schema):
        conn = await admin_connection()
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            lock = ("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"passerelle-journal:{schema}",))
            await _pg.migrate(conn, schema, "schema_migrations", lock, migrations.load("postgres")[:1], named=True)  # type: ignore[arg-type]
            for row_id, state, raw, key in ((1, "rejected", junk, "LAB^FAC^9"), (2, "delivered", good, "LAB^FAC^1")):
                await conn.execute(
                    "INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, dedup_key, lane, state, raw)"
                    " VALUES (%s, now(), now(), 'mllp', 'LAB^FAC', 'oru', %s, %s, %s, %s)",
                    (row_id, key, f"row:{row_id}", state, raw),
                )
            await conn.execute("SELECT setval('messages_id_seq', 2)")
        finally:
            await conn.close()
        j = PostgresJournal(dsn, schema=schema)
        await j.open()
        try:
            rejected, delivered = await j.get(1), await j.get(2)
            assert rejected is not None and delivered is not None
            assert (rejected.size, rejected.sha256) == (len(junk), hashlib.sha256(junk).hexdigest())
            assert rejected.raw == junk[:65536] and rejected.dedup_key == "" and rejected.truncated
            assert (delivered.raw, delivered.size, delivered.sha256) == (
                good,
                len(good),
                hashlib.sha256(good).hexdigest(),
            )
            assert await _scalar(schema, "SELECT count(*) FROM messages WHERE raw <> ''::bytea") == 0
            [res] = await j.append([item(3)])
            assert res.row_id == 3
        finally:
            await j.close()
