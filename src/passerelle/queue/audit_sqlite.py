"""SQLite audit store: an ``audit_event`` table, usually in the journal's database file.

It opens its own connection (WAL mode lets it share the file with the journal; ``busy_timeout`` waits for
the journal's write lock instead of failing) on one dedicated thread, with ``synchronous=FULL`` so an
appended record survives a power cut once :meth:`append` returns; the file is private (0600) like the
journal's (:mod:`._sqlite_db`). Its schema is versioned separately from the journal's (table
``audit_migrations``). Triggers refuse ``UPDATE``, and ``DELETE`` of any record the expiry horizon does
not cover (:class:`~passerelle.queue.audit.AuditRetention`).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditRecord
from passerelle.queue import _sqlite_db
from passerelle.queue.audit import COLUMNS, AuditQuery, filters, record_from_row, record_values

T = TypeVar("T")

#: The database's clock in microseconds since 1970 (what the triggers compare with).
_NOW_US = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
_DAY_US = 86_400_000_000
#: The latest time the horizon may take: the database's clock minus the floor.
_LATEST_US = f"({_NOW_US} - (SELECT floor_days FROM audit_horizon WHERE id = 1) * {_DAY_US})"

#: (version, SQL) — append new versions, never edit an applied one.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE audit_event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    row_id INTEGER NOT NULL DEFAULT 0,
    document_id TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL DEFAULT '',
    patient_oid TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_event_at ON audit_event (at_us);
CREATE INDEX audit_event_document ON audit_event (document_id) WHERE document_id != '';
CREATE INDEX audit_event_patient ON audit_event (patient_id) WHERE patient_id != '';
CREATE INDEX audit_event_action ON audit_event (action, at_us);
CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
""",
    ),
    (
        2,
        f"""
-- Retention: a record may be deleted only when older than the horizon AND older than the database's
-- clock minus floor_days; the horizon can never be set later than that. Fails closed (COALESCE).
CREATE TABLE audit_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    before_us INTEGER NOT NULL,
    floor_days INTEGER NOT NULL
);
INSERT INTO audit_horizon (id, before_us, floor_days) VALUES (1, 0, 400);  -- audit.FLOOR_DAYS
DROP TRIGGER audit_event_no_delete;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
WHEN NOT COALESCE(OLD.at_us < (SELECT before_us FROM audit_horizon WHERE id = 1) AND OLD.at_us < {_LATEST_US}, 0)
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
CREATE TRIGGER audit_horizon_no_insert BEFORE INSERT ON audit_horizon
BEGIN SELECT RAISE(ABORT, 'audit_horizon has one row'); END;
CREATE TRIGGER audit_horizon_no_delete BEFORE DELETE ON audit_horizon
BEGIN SELECT RAISE(ABORT, 'audit_horizon has one row'); END;
CREATE TRIGGER audit_horizon_guard BEFORE UPDATE ON audit_horizon
WHEN NOT COALESCE(NEW.id = OLD.id AND NEW.floor_days = OLD.floor_days
                  AND NEW.before_us <= {_NOW_US} - OLD.floor_days * {_DAY_US}, 0)
BEGIN SELECT RAISE(ABORT, 'audit records younger than the retention floor stay'); END;
""",
    ),
)

_SELECT = ", ".join(COLUMNS).format(at="at_us")


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(value: int) -> datetime:
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _record_migration(conn: sqlite3.Connection, version: int, name: str) -> None:
    conn.execute("INSERT INTO audit_migrations (version, applied_at) VALUES (?, ?)", (version, _us(datetime.now(UTC))))


class SQLiteAuditStore:
    """Audit store in the SQLite file ``path`` (the journal's file is fine). See the module docstring."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, max_batch: int = 512) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch = max_batch
        #: committed transactions (group commit makes this lower than the number of appends)
        self.commits = 0
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[list[AuditRecord], asyncio.Future[list[int]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        try:
            self._conn = await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = _sqlite_db.connect(self.path, self.busy_timeout_ms)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM audit_migrations")}
            pending = [(version, f"audit {version}", sql) for version, sql in MIGRATIONS]
            _sqlite_db.migrate(conn, pending, done, _record_migration)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Wait for pending appends, then close. Idempotent."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._conn is None or self._executor is None:
            return
        conn, self._conn = self._conn, None
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Durable once it returns. Concurrent appends are group-committed: callers waiting while one
        transaction commits share the next one (one fsync for many records, order kept)."""
        if not records:
            return []
        self._require()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(records), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="audit-sqlite-flush")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            rows = [record for records, _ in batch for record in records]
            try:
                ids = await self._run(functools.partial(self._insert, rows))
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # the caller re-raises it; never "exception never retrieved"
                if not isinstance(exc, Exception):
                    raise
                continue
            position = 0
            for records, future in batch:
                if not future.done():
                    future.set_result(ids[position : position + len(records)])
                position += len(records)

    def _insert(self, records: Sequence[AuditRecord]) -> list[int]:
        ids = []
        with _sqlite_db.write_transaction(self._require()) as conn:
            for r in records:
                cursor = conn.execute(
                    "INSERT INTO audit_event (at_us, action, outcome, reason, actor, row_id, document_id,"
                    " patient_id, patient_oid, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    record_values(r, _us),
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
        self.commits += 1
        return ids

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        conn = self._require()
        where, params = filters(query, "at_us", _us, "?")
        sql = f"SELECT {_SELECT} FROM audit_event WHERE {where} ORDER BY id LIMIT ?"

        def work() -> list[AuditRecord]:
            return [record_from_row(row, _from_us) for row in conn.execute(sql, params).fetchall()]

        return await self._run(work)

    # --- retention (AuditRetention) ---------------------------------------------------------------

    async def expirable(self, before: datetime) -> int:
        conn = self._require()
        sql = f"SELECT COUNT(*) FROM audit_event WHERE at_us < MIN(?, {_LATEST_US})"
        return await self._run(lambda: int(conn.execute(sql, (_us(before),)).fetchone()[0]))

    async def expire(self, before: datetime, limit: int) -> int:
        return await self._run(functools.partial(self._expire, _us(before), limit))

    def _expire(self, before_us: int, limit: int) -> int:
        with _sqlite_db.write_transaction(self._require()) as conn:
            conn.execute(f"UPDATE audit_horizon SET before_us = MIN(?, {_LATEST_US}) WHERE id = 1", (before_us,))
            return conn.execute(
                "DELETE FROM audit_event WHERE id IN (SELECT id FROM audit_event WHERE at_us < "
                "(SELECT before_us FROM audit_horizon WHERE id = 1) ORDER BY at_us LIMIT ?)",
                (limit,),
            ).rowcount

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteAuditStore is not open")
        return self._conn

    async def _run(self, fn: Callable[[], T]) -> T:
        assert self._executor is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.OperationalError as exc:  # locked too long, disk full, I/O error
            raise QueueUnavailableError(f"audit store unavailable ({exc.sqlite_errorname})") from exc
        except OSError as exc:  # creating the file or its directory
            raise QueueUnavailableError(f"audit store file error ({exc.strerror})") from exc
