"""PostgreSQL audit store (psycopg 3): an ``audit_event`` table in a configurable schema.

One connection, used by one coroutine at a time (the audit volume is a few records per document).
Migrations run under a transaction-scoped advisory lock so several gateway instances starting together
apply them once; their versions live in ``audit_migrations``. A trigger refuses ``UPDATE``, ``DELETE`` and
``TRUNCATE`` on the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditAction, AuditOutcome, AuditRecord
from passerelle.queue.audit import AuditQuery

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
)

_COLUMNS = "id, at, action, outcome, reason, actor, row_id, document_id, patient_id, patient_oid, detail"


def _record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=row[1],
        action=AuditAction(row[2]),
        outcome=AuditOutcome(row[3]),
        reason=row[4],
        actor=row[5],
        row_id=row[6],
        document_id=row[7],
        patient_id=row[8],
        patient_oid=row[9],
        detail=row[10],
    )


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
        schema = sql.Identifier(self.schema)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.audit_migrations"
                    " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ).format(schema)
            )
            cursor = await conn.execute(sql.SQL("SELECT version FROM {}.audit_migrations").format(schema))
            applied = {row[0] for row in await cursor.fetchall()}
            for version, text in MIGRATIONS:
                if version in applied:
                    continue
                # the schema name is validated by _SCHEMA_RE and quoted as an identifier
                quoted = schema.as_string(conn)
                await conn.execute(text.replace("{schema}", quoted).encode())
                await conn.execute(
                    sql.SQL("INSERT INTO {}.audit_migrations (version) VALUES (%s)").format(schema), (version,)
                )

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
        async with self._lock:
            conn = await self._connection()
            try:
                ids = []
                async with conn.transaction():
                    for r in records:
                        cursor = await conn.execute(
                            query,
                            (
                                r.at,
                                r.action.value,
                                r.outcome.value,
                                r.reason,
                                r.actor,
                                r.row_id,
                                r.document_id,
                                r.patient_id,
                                r.patient_oid,
                                r.detail,
                            ),
                        )
                        row = await cursor.fetchone()
                        assert row is not None
                        ids.append(int(row[0]))
                return ids
            except psycopg.OperationalError as exc:
                await self._drop(conn)
                raise QueueUnavailableError("audit database unavailable") from exc

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        where: list[sql.Composable] = [sql.SQL("id > %s")]
        params: list[Any] = [query.after_id]
        if query.since is not None:
            where.append(sql.SQL("at >= %s"))
            params.append(query.since)
        if query.until is not None:
            where.append(sql.SQL("at < %s"))
            params.append(query.until)
        for column, value in (
            ("document_id", query.document_id),
            ("patient_id", query.patient_id),
            ("actor", query.actor),
            ("action", query.action.value if query.action else ""),
        ):
            if value:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY id LIMIT %s").format(
            sql.SQL(_COLUMNS), self._table, sql.SQL(" AND ").join(where)
        )
        params.append(query.limit)
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    cursor = await conn.execute(statement, params)
                    rows = await cursor.fetchall()
            except psycopg.OperationalError as exc:
                await self._drop(conn)
                raise QueueUnavailableError("audit database unavailable") from exc
        return [_record(row) for row in rows]

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
