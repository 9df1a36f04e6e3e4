"""One contract suite for every audit store: memory, SQLite (real file, shared with the journal) and
PostgreSQL (the real server, a schema of its own per test, dropped afterwards)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from passerelle.observability.audit import AuditAction, AuditOutcome, AuditRecord, AuditTrail
from passerelle.queue.audit import AuditQuery, AuditStore
from passerelle.queue.audit_memory import MemoryAuditStore
from passerelle.queue.audit_postgres import PostgresAuditStore
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from tests.support.pg import DSN as PG_DSN
from tests.support.pg import pg_schema

T0 = datetime(2026, 11, 22, 3, 0, 0, 123456, tzinfo=UTC)


@asynccontextmanager
async def postgres_store() -> AsyncIterator[tuple[PostgresAuditStore, str]]:
    """An open PostgreSQL audit store on a schema of its own (tests/support/pg.py), dropped afterwards."""
    async with pg_schema() as (dsn, schema):
        store = PostgresAuditStore(dsn, schema=schema)
        await store.open()
        try:
            yield store, schema
        finally:
            await store.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditStore]:
    if request.param == "postgres":
        async with postgres_store() as (pg_store, _):
            yield pg_store
        return
    backend = MemoryAuditStore() if request.param == "memory" else SQLiteAuditStore(tmp_path / "passerelle.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def rec(minutes: int = 0, **changes: object) -> AuditRecord:
    base: dict[str, object] = {
        "at": T0 + timedelta(minutes=minutes),
        "action": AuditAction.CONSENT_DECISION,
        "outcome": AuditOutcome.DELIVER,
        "reason": "allowed",
        "row_id": 7,
        "document_id": "1.2.250.1.999.2.3.1",
        "patient_id": "280017512345610",
        "patient_oid": "1.2.250.1.213.1.4.10",
    }
    base.update(changes)
    return AuditRecord(**base)  # type: ignore[arg-type]


async def test_append_returns_increasing_ids_and_roundtrips(store: AuditStore) -> None:
    ids = await store.append([rec(0), rec(1, action=AuditAction.DELIVERY, reason="publish", detail="HTTP 200")])
    more = await store.append([rec(2)])
    assert ids[0] < ids[1] < more[0]
    got = await store.query(AuditQuery())
    assert [r.id for r in got] == [*ids, *more]
    first = got[0]
    assert first == rec(0, id=ids[0])  # every field, microseconds and time zone included
    assert first.at == T0
    assert got[1].detail == "HTTP 200" and got[1].action == AuditAction.DELIVERY


async def test_empty_append(store: AuditStore) -> None:
    assert await store.append([]) == []
    assert await store.query(AuditQuery()) == []


async def test_query_filters(store: AuditStore) -> None:
    await store.append(
        [
            rec(0),
            rec(5, document_id="1.2.3.9", action=AuditAction.DELIVERY, reason="publish"),
            rec(10, patient_id="180017512345699", action=AuditAction.REFUSAL, outcome="refuse", reason="x"),
            rec(15, action=AuditAction.REPLAY, outcome="success", reason="operator", actor="admin:alice"),
        ]
    )

    async def ids(**kw: object) -> list[int]:
        return [r.id for r in await store.query(AuditQuery(**kw))]  # type: ignore[arg-type]

    everything = await ids()
    assert len(everything) == 4
    assert await ids(since=T0 + timedelta(minutes=5)) == everything[1:]
    assert await ids(until=T0 + timedelta(minutes=5)) == everything[:1]
    assert await ids(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=15)) == everything[1:3]
    assert await ids(document_id="1.2.3.9") == [everything[1]]
    assert await ids(patient_id="180017512345699") == [everything[2]]
    assert await ids(action=AuditAction.REPLAY) == [everything[3]]
    assert await ids(actor="admin:alice") == [everything[3]]
    assert await ids(action=AuditAction.DELIVERY, document_id="nope") == []
    assert await ids(limit=2) == everything[:2]
    assert await ids(after_id=everything[1], limit=1) == [everything[2]]


async def test_audit_trail_records_through_the_store(store: AuditStore) -> None:
    trail = AuditTrail(store, clock=lambda: T0)
    await trail.record(
        action="delivery", outcome="deliver", reason="publish", row_id=3, document_id="1.2.3", patient_id="p"
    )
    (got,) = await store.query(AuditQuery(document_id="1.2.3"))
    assert got.id > 0 and got.at == T0 and got.actor == "passerelle"


async def test_store_has_no_update_or_delete_api(store: AuditStore) -> None:
    public = {name for name in dir(store) if not name.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "remove", "purge", "clear"))}


async def test_sqlite_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.db"
    store = SQLiteAuditStore(path)
    await store.open()
    await store.append([rec(0)])
    await store.close()
    conn = sqlite3.connect(path)
    try:
        for statement in ("UPDATE audit_event SET reason = 'forged'", "DELETE FROM audit_event"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT reason FROM audit_event").fetchall() == [("allowed",)]
    finally:
        conn.close()


async def test_sqlite_reopen_keeps_records_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.db"
    for _ in range(2):
        store = SQLiteAuditStore(path)
        await store.open()
        await store.append([rec(0)])
        await store.close()
    store = SQLiteAuditStore(path)
    await store.open()
    assert len(await store.query(AuditQuery())) == 2
    await store.close()
    await store.close()  # idempotent
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM audit_migrations").fetchall() == [(1,), (2,)]
    conn.close()


async def test_sqlite_shares_the_journal_file(tmp_path: Path) -> None:
    from passerelle.queue.model import Inbound
    from passerelle.queue.sqlite import SQLiteJournal

    path = tmp_path / "passerelle.db"
    journal = SQLiteJournal(path)
    await journal.open()
    audit = SQLiteAuditStore(path)
    await audit.open()
    try:
        (result,) = await journal.append([Inbound(raw=b"MSH|x", channel="mllp", sender="s", kind="oru")])
        (audit_id,) = await audit.append([rec(0, action=AuditAction.RECEIVED, outcome="success", row_id=result.row_id)])
        assert (await journal.get(result.row_id)) is not None
        (got,) = await audit.query(AuditQuery())
        assert got.id == audit_id and got.row_id == result.row_id
    finally:
        await audit.close()
        await journal.close()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"audit_event", "audit_migrations"} <= tables


async def test_postgres_triggers_refuse_update_delete_truncate() -> None:
    async with postgres_store() as (store, schema):
        await store.append([rec(0)])
        # a second store on the same schema (another instance) does not migrate again
        other = PostgresAuditStore(PG_DSN, schema=schema)
        await other.open()
        assert len(await other.query(AuditQuery())) == 1
        await other.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for statement in (
                f"UPDATE \"{schema}\".audit_event SET reason = 'forged'",
                f'DELETE FROM "{schema}".audit_event',
                f'TRUNCATE "{schema}".audit_event',
            ):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    conn.execute(statement)
            assert conn.execute(f'SELECT reason FROM "{schema}".audit_event').fetchall() == [("allowed",)]
            assert conn.execute(f'SELECT version FROM "{schema}".audit_migrations').fetchall() == [(1,), (2,)]


def test_postgres_schema_name_is_checked() -> None:
    with pytest.raises(ValueError):
        PostgresAuditStore(PG_DSN, schema='x"; DROP TABLE y; --')


async def test_concurrent_appends_keep_every_record_in_order(store: AuditStore) -> None:
    import asyncio

    batches = [[rec(i, row_id=i), rec(i, row_id=1000 + i)] for i in range(40)]
    results = await asyncio.gather(*(store.append(b) for b in batches))
    all_ids = [i for ids in results for i in ids]
    assert len(set(all_ids)) == 80
    for ids, batch in zip(results, batches, strict=True):
        assert ids[0] < ids[1]
        got = await store.query(AuditQuery(after_id=ids[0] - 1, limit=2))
        assert [r.row_id for r in got] == [r.row_id for r in batch]


async def test_sqlite_group_commit(tmp_path: Path) -> None:
    import asyncio

    store = SQLiteAuditStore(tmp_path / "passerelle.db")
    await store.open()
    try:
        await asyncio.gather(*(store.append([rec(i)]) for i in range(50)))
        assert len(await store.query(AuditQuery())) == 50
        assert store.commits < 50  # appends waiting together shared transactions
    finally:
        await store.close()


async def test_postgres_reconnects_after_the_connection_is_killed() -> None:
    from passerelle.errors import QueueUnavailableError

    async with postgres_store() as (store, _):
        await store.append([rec(0)])
        conn = store._conn
        assert conn is not None
        pid = conn.info.backend_pid
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(QueueUnavailableError):
            await store.append([rec(1)])
        await store.append([rec(2)])  # a new connection
        assert [r.at for r in await store.query(AuditQuery())] == [rec(0).at, rec(2).at]


# --- retention: expiry behind a floor the database enforces -----------------------------------------------


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def test_expiry_never_reaches_records_younger_than_the_floor(store: AuditStore) -> None:
    from passerelle.queue.audit import FLOOR_DAYS

    assert FLOOR_DAYS == 400
    retention = store
    old = await store.append([rec(0, at=days_ago(800)), rec(0, at=days_ago(401))])
    young = await store.append([rec(0, at=days_ago(399)), rec(0, at=days_ago(1))])
    far_future = datetime.now(UTC) + timedelta(days=3650)  # a caller's clock or settings gone wrong
    assert await retention.expirable(far_future) == 2
    assert await retention.expire(far_future, 100) == 2
    assert [r.id for r in await store.query(AuditQuery())] == young
    assert await retention.expirable(far_future) == 0
    assert await retention.expire(far_future, 100) == 0
    assert not set(old) & {r.id for r in await store.query(AuditQuery())}


async def test_expiry_honours_a_longer_retention_and_works_in_batches(store: AuditStore) -> None:
    retention = store
    ids = await store.append([rec(0, at=days_ago(900 - n)) for n in range(5)] + [rec(0, at=days_ago(500))])
    before = days_ago(600)  # record_days = 600: the 500-day-old record stays
    assert await retention.expirable(before) == 5
    assert [await retention.expire(before, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert [r.id for r in await store.query(AuditQuery())] == ids[5:]
    later = await store.append([rec(0)])
    assert later[0] > ids[-1]  # ids keep increasing after an expiry


async def test_sqlite_expiry_keeps_the_append_only_guarantee(tmp_path: Path) -> None:
    path = tmp_path / "passerelle.db"
    store = SQLiteAuditStore(path)
    await store.open()
    old, young = await store.append([rec(0, at=days_ago(800)), rec(0, at=days_ago(10))])
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_event WHERE id = ?", (old,))  # no horizon yet: nothing goes
        assert await store.expire(days_ago(600), 0) == 0  # moves the horizon, removes nothing
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_event WHERE id = ?", (young,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit_event SET reason = 'forged' WHERE id = ?", (old,))
        for statement in (
            "UPDATE audit_horizon SET before_us = 99999999999999999",  # beyond now - floor
            "UPDATE audit_horizon SET floor_days = 1",
            "DELETE FROM audit_horizon",
            "INSERT INTO audit_horizon (id, before_us, floor_days) VALUES (2, 0, 0)",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(statement)
        conn.execute("DELETE FROM audit_event WHERE id = ?", (old,))  # behind the horizon: allowed
        assert [r[0] for r in conn.execute("SELECT id FROM audit_event")] == [young]
    finally:
        conn.close()
        await store.close()


async def test_postgres_expiry_keeps_the_append_only_guarantee() -> None:
    async with postgres_store() as (store, schema):
        old, young = await store.append([rec(0, at=days_ago(800)), rec(0, at=days_ago(10))])
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(f'DELETE FROM "{schema}".audit_event WHERE id = %s', (old,))
            assert await store.expire(days_ago(600), 0) == 0
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(f'DELETE FROM "{schema}".audit_event WHERE id = %s', (young,))
            for statement in (
                f'UPDATE "{schema}".audit_horizon SET before = now()',
                f'UPDATE "{schema}".audit_horizon SET floor_days = 1',
                f'DELETE FROM "{schema}".audit_horizon',
                f'TRUNCATE "{schema}".audit_horizon',
                f"INSERT INTO \"{schema}\".audit_horizon VALUES (2, '-infinity', 0)",
            ):
                with pytest.raises(psycopg.errors.RaiseException):
                    conn.execute(statement)
            conn.execute(f'DELETE FROM "{schema}".audit_event WHERE id = %s', (old,))
            assert conn.execute(f'SELECT id FROM "{schema}".audit_event').fetchall() == [(young,)]
