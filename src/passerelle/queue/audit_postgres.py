"""PostgreSQL audit store (psycopg 3): an ``audit_event`` table in a configurable schema.

One connection, used by one coroutine at a time (the audit volume is a few records per document).
Migrations run under a transaction-scoped advisory lock so several gateway instances starting together
apply them once; their versions live in ``audit_migrations``. Triggers refuse ``UPDATE`` and ``TRUNCATE``
on the table, and ``DELETE`` of any record the expiry horizon does not cover
(:class:`~passerelle.queue.audit.AuditRetention`; the horizon's own trigger uses the server's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditRecord
from passerelle.queue import _pg
from passerelle.queue.audit import COLUMNS, AuditQuery, filters, record_from_row, record_values

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_KEY = 0x7061_7564_6974  # "paudit": advisory lock for audit migrations

#: (version, SQL with ``{schema}`` placeholders) — append new versions, never edit an applied one.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE {schema}.audit_event (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    row_id BIGINT NOT NULL DEFAULT 0,
    document_id TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL DEFAULT '',
    patient_oid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_event_at ON {schema}.audit_event (at);
CREATE INDEX audit_event_document ON {schema}.audit_event (document_id) WHERE document_id <> '';
CREATE INDEX audit_event_patient ON {schema}.audit_event (patient_id) WHERE patient_id <> '';
CREATE INDEX audit_event_action ON {schema}.audit_event (action, at);
CREATE FUNCTION {schema}.audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only';
END
$$;
CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON {schema}.audit_event
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_event_append_only();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {schema}.audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_event_append_only();
""",
    ),
    (
        2,
        """
-- Retention: a record may be deleted only when older than the horizon AND older than the server's clock
-- minus floor_days; the horizon can never be set later than that (docs/journal.md).
CREATE TABLE {schema}.audit_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    before TIMESTAMPTZ NOT NULL,
    floor_days INTEGER NOT NULL
);
INSERT INTO {schema}.audit_horizon (id, before, floor_days) VALUES (1, '-infinity', 400);  -- audit.FLOOR_DAYS
CREATE FUNCTION {schema}.audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM {schema}.audit_horizon h
            WHERE OLD.at < h.before AND OLD.at < now() - make_interval(days => h.floor_days)) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only';
END
$$;
DROP TRIGGER audit_event_no_change ON {schema}.audit_event;
CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON {schema}.audit_event
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_event_guard();
CREATE FUNCTION {schema}.audit_horizon_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.floor_days = OLD.floor_days
            AND NEW.before <= now() - make_interval(days => OLD.floor_days) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit records younger than the retention floor stay';
END
$$;
CREATE TRIGGER audit_horizon_guard BEFORE INSERT OR UPDATE OR DELETE ON {schema}.audit_horizon
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_horizon_guard();
CREATE TRIGGER audit_horizon_no_truncate BEFORE TRUNCATE ON {schema}.audit_horizon
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.audit_event_append_only();
""",
    ),
)

_SELECT = ", ".join(COLUMNS).format(at="at")


def _same(value: datetime) -> datetime:
    return value


class PostgresAuditStore:
    """Audit store on PostgreSQL ``dsn`` in ``schema`` (created if missing). ``dsn`` carries no password
    literal in configuration: use a password file / environment (libpq ``PGPASSFILE``) or trust auth."""

    def __init__(self, dsn: str, *, schema: str = "public", connect_timeout_s: float = 10.0) -> None:
        if not _SCHEMA_RE.match(schema):
            raise ValueError("schema must be a lower-case SQL identifier")
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._opened = False
        self._lock = asyncio.Lock()

    @property
    def _table(self) -> sql.Composed:
        return sql.SQL("{}.audit_event").format(sql.Identifier(self.schema))

    @property
    def _horizon(self) -> sql.Composed:
        return sql.SQL("{}.audit_horizon").format(sql.Identifier(self.schema))

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._conn = await self._connect(migrate=True)
        self._opened = True

    async def _connect(self, *, migrate: bool) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=int(self.connect_timeout_s))
        except psycopg.OperationalError as exc:
            raise QueueUnavailableError("audit database unavailable") from exc
        if migrate:
            try:
                await self._migrate(conn)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _migrate(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        # the schema name is validated by _SCHEMA_RE and quoted as an identifier
        quoted = sql.Identifier(self.schema).as_string(conn)
        pending = [(version, f"audit {version}", text.replace("{schema}", quoted)) for version, text in MIGRATIONS]
        lock = ("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await _pg.migrate(conn, self.schema, "audit_migrations", lock, pending, named=False)

    async def close(self) -> None:
        self._opened = False
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        await conn.close()

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        if not records:
            return []
        query = sql.SQL(
            "INSERT INTO {} (at, action, outcome, reason, actor, row_id, document_id, patient_id, patient_oid,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
        ).format(self._table)

        async def work(conn: Conn) -> list[int]:
            ids = []
            for r in records:
                cursor = await conn.execute(query, record_values(r, _same))
                row = await cursor.fetchone()
                assert row is not None
                ids.append(int(row[0]))
            return ids

        return await self._transaction(work)

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        where, params = filters(query, "at", _same, "%s")
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY id LIMIT %s").format(
            sql.SQL(_SELECT), self._table, sql.SQL(where)
        )

        async def work(conn: Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchall()

        return [record_from_row(row, _same) for row in await self._transaction(work)]

    # --- retention (AuditRetention) ---------------------------------------------------------------

    @property
    def _latest(self) -> sql.Composed:
        """The latest time the horizon may take: the server's clock minus the floor."""
        return sql.SQL(
            "LEAST(%s::timestamptz, now() - make_interval(days => (SELECT floor_days FROM {} WHERE id = 1)))"
        ).format(self._horizon)

    async def expirable(self, before: datetime) -> int:
        statement = sql.SQL("SELECT count(*) FROM {} WHERE at < {}").format(self._table, self._latest)

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(statement, (before,))
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._transaction(work)

    async def expire(self, before: datetime, limit: int) -> int:
        move = sql.SQL("UPDATE {} SET before = {} WHERE id = 1").format(self._horizon, self._latest)
        remove = sql.SQL(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE at < (SELECT before FROM {h} WHERE id = 1)"
            " ORDER BY at LIMIT %s)"
        ).format(t=self._table, h=self._horizon)

        async def work(conn: Conn) -> int:
            await conn.execute(move, (before,))
            cursor = await conn.execute(remove, (limit,))
            return cursor.rowcount

        return await self._transaction(work)

    async def _transaction(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction on the store's connection (one caller at a time)."""
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    return await work(conn)
            except psycopg.OperationalError as exc:
                await self._drop(conn)
                raise QueueUnavailableError("audit database unavailable") from exc

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        """The open connection; after a lost connection, a new one (the next call after a failure)."""
        if not self._opened:
            raise RuntimeError("PostgresAuditStore is not open")
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await self._connect(migrate=False)
        return self._conn

    async def _drop(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        if conn.broken or conn.closed:
            self._conn = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
