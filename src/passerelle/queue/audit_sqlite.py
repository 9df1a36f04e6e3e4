"""SQLite audit store: an ``audit_event`` table, usually in the journal's database file.

It opens its own connection (WAL mode lets it share the file with the journal; ``busy_timeout`` waits for
the journal's write lock instead of failing) on one dedicated thread, with ``synchronous=FULL`` so an
appended record survives a power cut once :meth:`append` returns. Its schema is versioned separately
from the journal's (table ``audit_migrations``). Triggers refuse ``UPDATE`` and ``DELETE``.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditAction, AuditOutcome, AuditRecord
from passerelle.queue.audit import AuditQuery

T = TypeVar("T")

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
)

_COLUMNS = "id, at_us, action, outcome, reason, actor, row_id, document_id, patient_id, patient_oid, detail"


def _us(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(value: int) -> datetime:
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _record(row: tuple[Any, ...]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        at=_from_us(row[1]),
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
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM audit_migrations")}
            for version, sql in MIGRATIONS:
                if version not in applied:
                    for statement in _statements(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO audit_migrations (version, applied_at) VALUES (?, ?)",
                        (version, _us(datetime.now(UTC))),
                    )
            conn.execute("COMMIT")
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
        conn = self._require()
        ids = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                cursor = conn.execute(
                    "INSERT INTO audit_event (at_us, action, outcome, reason, actor, row_id, document_id,"
                    " patient_id, patient_oid, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        _us(r.at),
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
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return ids

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        conn = self._require()
        where = ["id > ?"]
        params: list[Any] = [query.after_id]
        if query.since is not None:
            where.append("at_us >= ?")
            params.append(_us(query.since))
        if query.until is not None:
            where.append("at_us < ?")
            params.append(_us(query.until))
        for column, value in (
            ("document_id", query.document_id),
            ("patient_id", query.patient_id),
            ("actor", query.actor),
            ("action", query.action.value if query.action else ""),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM audit_event WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        params.append(query.limit)

        def work() -> list[AuditRecord]:
            return [_record(row) for row in conn.execute(sql, params).fetchall()]

        return await self._run(work)

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


def _statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN … END;) whole."""
    statements: list[str] = []
    current = ""
    for line in sql.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError("incomplete SQL statement in an audit migration")
    return statements
