"""SQLite journal: the embedded default.

Durability: WAL with ``synchronous=FULL``, checked at open (a journal that cannot guarantee an fsync'd
commit refuses to start). The file, its WAL and the directories created for it are private (0600/0700)
whatever the umask; see :mod:`._sqlite_db`. Every statement runs on one dedicated thread that owns the
connection. Appends are *group-committed*: while one transaction is being committed, new appends queue
up and the next transaction takes them all, so many connections share one fsync while each caller still
returns only after the commit that contains its rows.

Retention (:class:`~passerelle.queue.ports.RetentionJournal`) runs on that same thread in short
transactions of at most ``limit`` rows, so an append waits for one purge batch at most.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from passerelle.errors import QueueUnavailableError
from passerelle.queue import _rows, _sql, _sqlite_db, migrations, model
from passerelle.queue._rows import Pending, Stored
from passerelle.queue.model import AppendResult, Event, Inbound, Row, State

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row(rec: Sequence[Any]) -> Row:
    return _rows.make_row(rec, _dt)


class SQLiteJournal:
    """Journal backed by one SQLite file.

    ``max_batch`` bounds how many appended messages one commit may carry. All methods raise
    :class:`QueueUnavailableError` when the database cannot be written (disk full, I/O error, locked).
    """

    def __init__(self, path: Path, *, max_batch: int = 512, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._heartbeats: dict[str, float] = {}
        self._dispatch_lock = _sqlite_db.DispatchLock(self.path)

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closing = False
        try:
            await self._call(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._wakeup = asyncio.Event()
        self._committer = asyncio.create_task(self._commit_loop(), name="journal-committer")

    def _open_sync(self) -> None:
        conn = _sqlite_db.connect(self.path, self.busy_timeout_ms)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            _sqlite_db.migrate(conn, migrations.load("sqlite"), done, _record_migration)
            _sqlite_db.convert_to_incremental_vacuum(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is None:
            return
        self._closing = True
        if self._committer is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._committer
            self._committer = None
        await self._call(self._close_sync)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return (self._committer,) if self._committer is not None else ()

    async def check_writable(self) -> None:
        """A file can be created and synced in the journal's directory (catches a read-only remount, a
        directory removed or replaced, a full disk, I/O errors), then the write lock can be taken
        (``BEGIN IMMEDIATE`` … ``ROLLBACK`` on the journal's thread, after the writes queued before it)."""
        try:
            await asyncio.to_thread(_sqlite_db.probe_directory, self.path.parent)
        except OSError as exc:
            raise QueueUnavailableError(f"cannot write in the journal's directory ({exc.strerror})") from exc
        await self._call(self._lock_probe_sync)

    def _lock_probe_sync(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("ROLLBACK")

    def _close_sync(self) -> None:
        self._dispatch_lock.release()
        self._heartbeats.clear()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise QueueUnavailableError("journal is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise QueueUnavailableError(f"journal error: {type(exc).__name__}") from exc
        except OSError as exc:  # creating the file or its directory
            raise QueueUnavailableError(f"journal file error: {exc.strerror}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueUnavailableError("journal is not open")
        return self._conn

    def _exec(self, sql: str, params: Sequence[Any]) -> None:
        self.conn.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        rec: tuple[Any, ...] | None = self.conn.execute(sql, params).fetchone()
        return rec

    def _all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    # --- append (group commit) --------------------------------------------------------------------

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        if self._wakeup is None or self._closing:
            raise QueueUnavailableError("journal is not open")
        fut: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        self._wakeup.set()
        return await fut

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = _rows.take_batch(self._pending, self.max_batch)
                try:
                    results = await self._call(self._append_sync, [b[0] for b in batch])
                except Exception as exc:  # noqa: BLE001 - every caller of this commit gets the failure
                    err = (
                        exc
                        if isinstance(exc, QueueUnavailableError)
                        else QueueUnavailableError("journal commit failed")
                    )
                    _rows.fail(batch, err)
                    continue
                _rows.resolve(batch, results)
            if self._closing and not self._pending:
                return

    def _append_sync(self, groups: list[Sequence[Inbound]]) -> list[list[AppendResult]]:
        """One transaction for every item of every group: one dedup lookup, batched inserts, one fsync."""
        with _sqlite_db.write_transaction(self.conn) as conn:
            return _Append(conn, datetime.now(UTC).timestamp()).run(groups)

    # --- claim / settle ---------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        return await self._call(self._claim_sync, worker, limit, lease_seconds, _ts(now))

    def _claim_sync(self, worker: str, limit: int, lease_seconds: float, now: float) -> list[Row]:
        # Not fsync'd: a claim lost in a crash only makes its lane claimable again (and the next
        # process gives every claim back anyway); the next durable commit makes it durable too.
        with _sqlite_db.write_transaction(self.conn, durable=False) as conn:
            lanes = conn.execute(
                "SELECT lane, head_id FROM lanes WHERE head_id IS NOT NULL AND due_at IS NOT NULL "
                "AND due_at <= ? AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE lanes SET lease_until = ?, worker = ? WHERE lane = ?",
                [(now + lease_seconds, worker, lane) for lane, _ in lanes],
            )
            rows = [_row(rec) for _, head in lanes if (rec := conn.execute(_sql.ROW_BY_ID, (head,)).fetchone())]
        return rows

    async def heartbeat(self, worker: str, now: datetime, dead_after_s: float) -> int:
        return await self._call(self._heartbeat_sync, worker, _ts(now), dead_after_s)

    def _heartbeat_sync(self, worker: str, now: float, dead_after_s: float) -> int:
        """Heartbeats live in this process: only the holder of the dispatch lock dispatches from this
        file, so a claim by a worker that has not heartbeated here (recently) belongs to a gone one."""
        self._heartbeats[worker] = now
        if not self._dispatch_lock.acquire():
            return 0
        cutoff = now - dead_after_s
        alive = [name for name, seen in self._heartbeats.items() if seen >= cutoff]
        marks = ",".join("?" * len(alive))
        with _sqlite_db.write_transaction(self.conn) as conn:
            return int(
                conn.execute(
                    "UPDATE lanes SET lease_until = NULL, worker = NULL "
                    f"WHERE worker IS NOT NULL AND lease_until > ? AND worker NOT IN ({marks})",
                    (now, *alive),
                ).rowcount
            )

    async def settle(self, row_id: int, settlement: model.Settlement, now: datetime) -> None:
        await self.settle_many([(row_id, settlement)], now)

    async def settle_many(self, settlements: Sequence[tuple[int, model.Settlement]], now: datetime) -> None:
        if settlements:
            await self._call(self._settle_sync, list(settlements), _ts(now))

    def _settle_sync(self, settlements: list[tuple[int, model.Settlement]], now: float) -> None:
        with _sqlite_db.write_transaction(self.conn) as conn:
            for row_id, s in settlements:
                self._settle_one(conn, row_id, s, now)
            self._insert_events(conn, [e for _, s in settlements for e in s.events])

    def _settle_one(self, conn: sqlite3.Connection, row_id: int, s: model.Settlement, now: float) -> None:
        rec = conn.execute("SELECT lane FROM messages WHERE id = ?", (row_id,)).fetchone()
        if rec is None:
            return
        lane = rec[0]
        next_due = _ts(s.next_due) if s.next_due is not None else None
        deadline = _ts(s.deadline) if s.deadline is not None else None
        step = _rows.attempt_increment(s.state)
        conn.execute(
            _sql.SETTLE,
            (s.state.value, s.detail, step, next_due, now, *(s.document_id,) * 2, *(s.patient_id,) * 2, deadline,
             row_id),
        )  # fmt: skip
        if s.state in (State.RETRY, State.PARKED):
            conn.execute(_sql.LANE_WAIT, (next_due if next_due is not None else now, lane, row_id))
        elif s.state is State.DEAD:
            conn.execute(_sql.LANE_HOLD, (lane, row_id))
        else:  # delivered, refused, rejected: the lane moves on
            self._advance_lane(conn, lane, now)

    @staticmethod
    def _advance_lane(conn: sqlite3.Connection, lane: str, now: float) -> None:
        nxt = conn.execute(_sql.NEXT_HEAD, (lane,)).fetchone()
        if nxt is None:
            conn.execute("DELETE FROM lanes WHERE lane = ?", (lane,))
            return
        due = _rows.lane_due(State(nxt[1]), nxt[2], now)
        conn.execute(
            "UPDATE lanes SET head_id = ?, due_at = ?, lease_until = NULL, worker = NULL WHERE lane = ?",
            (nxt[0], due, lane),
        )

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
        conn.executemany(
            "INSERT INTO events (row_id, at, kind, detail, data) VALUES (?,?,?,?,?)",
            [(e.row_id, _ts(e.at), e.kind, e.detail, json.dumps(e.data, sort_keys=True, default=str)) for e in events],
        )

    async def requeue(self, row_id: int, now: datetime, detail: str) -> bool:
        return await self._call(self._requeue_sync, row_id, _ts(now), detail)

    def _requeue_sync(self, row_id: int, now: float, detail: str) -> bool:
        with _sqlite_db.write_transaction(self.conn) as conn:
            rec = conn.execute("SELECT lane FROM messages WHERE id = ?", (row_id,)).fetchone()
            if rec is None or conn.execute(_sql.REQUEUE, (now, now, detail, row_id)).rowcount == 0:
                return False
            lane = rec[0]
            conn.execute(_sql.REPLAY_EVENT, (row_id, now, detail))
            head = conn.execute("SELECT head_id FROM lanes WHERE lane = ?", (lane,)).fetchone()
            if head is None:
                conn.execute("INSERT INTO lanes (lane, head_id, due_at) VALUES (?,?,?)", (lane, row_id, now))
            elif head[0] is None or head[0] >= row_id:
                conn.execute(
                    "UPDATE lanes SET head_id = ?, due_at = ?, lease_until = NULL WHERE lane = ?", (row_id, now, lane)
                )
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        await self._call(self._exec, _sql.SET_DEADLINE, (_ts(deadline), row_id))

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, row_id: int) -> Row | None:
        rec = await self._call(self._one, _sql.ROW_BY_ID, (row_id,))
        return _row(rec) if rec else None

    async def find(self, query: model.Query) -> list[Row]:
        where, params = _rows.query_filters(query, "?", _ts)
        up = _rows.upward(query)
        recs = await self._call(self._all, _sql.find(up).format(where=where), (*params, _rows.page_size(query)))
        rows = [_row(r) for r in recs]
        return rows[::-1] if up else rows

    async def events(self, row_id: int) -> list[Event]:
        recs = await self._call(self._all, _sql.EVENTS_OF, (row_id,))
        return [Event(r[0], datetime.fromtimestamp(r[1], UTC), r[2], r[3], json.loads(r[4])) for r in recs]

    async def add_events(self, events: Sequence[Event]) -> None:
        await self._call(self._insert_events, self.conn, events)

    async def counts(self) -> dict[State, int]:
        found = dict(await self._call(self._all, _sql.COUNTS, ()))
        return {s: int(found.get(s.value, 0)) for s in State}

    async def oldest_pending(self) -> datetime | None:
        rec = await self._call(self._one, _sql.OLDEST_PENDING, ())
        return _dt(rec[0]) if rec else None

    async def activity(self, since: datetime) -> model.Activity:
        received = await self._call(self._one, _sql.RECEIVED_SINCE, (_ts(since),))
        delivered = await self._call(self._one, _sql.DELIVERED_SINCE_SQLITE, (_ts(since),))
        return model.Activity(int(received[0]) if received else 0, int(delivered[0]) if delivered else 0)

    # --- registry, series, patient map ------------------------------------------------------------

    async def registry_get(self, ins: str) -> model.RegistryEntry | None:
        r = await self._call(self._one, _sql.REGISTRY_GET, (ins,))
        return model.RegistryEntry(r[0], r[1], r[2], r[3], r[4], _dt(r[5]), r[6]) if r else None

    async def registry_put(self, entry: model.RegistryEntry) -> None:
        at = _ts(entry.updated_at) if entry.updated_at else datetime.now(UTC).timestamp()
        e = entry
        params = (e.ins, e.ins_oid, e.dmp_status, e.feeding, e.consultation, at, e.source_row)
        await self._call(self._exec, _sql.REGISTRY_PUT, params)

    async def series_get(self, series_key: str) -> model.SeriesEntry | None:
        r = await self._call(self._one, _sql.SERIES_GET, (series_key,))
        return model.SeriesEntry(*r) if r else None

    async def series_put(self, entry: model.SeriesEntry, now: datetime) -> None:
        e = entry
        await self._call(
            self._exec, _sql.SERIES_PUT, (e.series_key, e.unique_id, e.set_id, e.version, e.row_id, _ts(now))
        )

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        r = await self._call(self._one, _sql.PATIENT_MAP_GET, (sender, local_id))
        return (r[0], r[1]) if r else None

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        await self._call(self._exec, _sql.PATIENT_MAP_PUT, (sender, local_id, ins, ins_oid))

    # --- retention --------------------------------------------------------------------------------

    async def payloads_due(self, state: State, settled_before: datetime) -> int:
        rec = await self._call(self._one, _sql.COUNT_PAYLOADS, (_rows.final_state(state), _ts(settled_before)))
        return int(rec[0]) if rec else 0

    async def purge_payloads(self, state: State, settled_before: datetime, limit: int, now: datetime) -> int:
        params = (_rows.final_state(state), _ts(settled_before), limit)
        return await self._call(self._purge_payloads_sync, params, _ts(now))

    async def records_due(self, settled_before: datetime) -> int:
        rec = await self._call(self._one, _sql.COUNT_RECORDS, (_ts(settled_before),))
        return int(rec[0]) if rec else 0

    async def delete_records(self, settled_before: datetime, limit: int) -> int:
        return await self._call(self._delete_records_sync, _ts(settled_before), limit)

    async def reclaim_space(self, max_pages: int) -> int:
        return await self._call(_sqlite_db.reclaim, self.conn, max_pages)

    def _purge_payloads_sync(self, due: Sequence[Any], now: float) -> int:
        """One batch: the payloads go (whole pages freed), the rows say so, in one short transaction."""
        with _sqlite_db.write_transaction(self.conn) as conn:
            ids = [r[0] for r in conn.execute(_sql.PAYLOADS_DUE, due).fetchall()]
            marks = ", ".join("?" * len(ids))
            conn.execute(f"DELETE FROM payloads WHERE row_id IN ({marks})", ids)
            conn.execute(f"UPDATE messages SET purged_at = ? WHERE id IN ({marks})", (now, *ids))
        return len(ids)

    def _delete_records_sync(self, before: float, limit: int) -> int:
        """One batch: the rows, their payloads, events and dedup keys, in one short transaction."""
        with _sqlite_db.write_transaction(self.conn) as conn:
            due = conn.execute(_sql.RECORDS_DUE, (before, limit)).fetchall()
            ids = [r[0] for r in due]
            marks = ", ".join("?" * len(ids))
            conn.execute("UPDATE id_high_water SET id = MAX(id, (SELECT COALESCE(MAX(id), 0) FROM messages))")
            for table, column in (("events", "row_id"), ("payloads", "row_id"), ("messages", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
            conn.executemany("DELETE FROM dedup WHERE dedup_key = ? AND row_id = ?", [(k, i) for i, k in due if k])
        return len(ids)


def _record_migration(conn: sqlite3.Connection, version: int, name: str) -> None:
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (version, name, datetime.now(UTC).timestamp()),
    )


#: The next message id: above every row, and above every row retention ever deleted.
_NEXT_ID = "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages), (SELECT id FROM id_high_water)) + 1"


class _Append:
    """One append transaction (the caller holds the write lock, so ids are assigned here)."""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now
        self.next_id = int(conn.execute(_NEXT_ID).fetchone()[0])
        self.seen: dict[str, tuple[str, int, bytes]] = {}  # dedup key -> (content hash, row id, ack)
        self.messages: list[tuple[Any, ...]] = []
        self.payloads: list[tuple[int, bytes]] = []
        self.dedup: list[tuple[Any, ...]] = []
        self.heads: dict[str, int] = {}

    def run(self, groups: list[Sequence[Inbound]]) -> list[list[AppendResult]]:
        self._lookup(sorted({item.dedup_key for group in groups for item in group if item.dedup_key}))
        out = [[self._add(item) for item in group] for group in groups]
        self.conn.executemany(
            "INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, message_id, dedup_key, "
            "content_hash, lane, state, detail, raw, ack, next_due, size, sha256) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,x'',?,?,?,?)",
            self.messages,
        )
        self.conn.executemany("INSERT INTO payloads (row_id, raw) VALUES (?, ?)", self.payloads)
        self.conn.executemany(
            "INSERT INTO dedup (dedup_key, content_hash, row_id, created_at) VALUES (?,?,?,?)", self.dedup
        )
        # A lane that already has a head keeps it (its head is older); a new or idle lane starts here.
        self.conn.executemany(
            "INSERT INTO lanes (lane, head_id, due_at) VALUES (?, ?, ?) "
            "ON CONFLICT (lane) DO UPDATE SET "
            "  due_at = CASE WHEN lanes.head_id IS NULL THEN excluded.due_at ELSE lanes.due_at END, "
            "  head_id = COALESCE(lanes.head_id, excluded.head_id)",
            [(lane, head, self.now) for lane, head in self.heads.items()],
        )
        return out

    def _lookup(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, content_hash, row_id, ack in self.conn.execute(
                "SELECT d.dedup_key, d.content_hash, d.row_id, m.ack FROM dedup d JOIN messages m ON m.id = d.row_id "
                f"WHERE d.dedup_key IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                self.seen[key] = (content_hash, row_id, bytes(ack))

    def _add(self, item: Inbound) -> AppendResult:
        known = self.seen.get(item.dedup_key) if item.dedup_key else None
        if known is not None:
            same = known[0] == item.content_hash
            return AppendResult(row_id=known[1], duplicate=same, conflict=not same, stored_ack=known[2])
        row_id, self.next_id = self.next_id, self.next_id + 1
        lane = item.lane or f"row:{uuid.uuid4().hex}"
        stored = Stored.of(item)
        accepted = item.state is State.ACCEPTED
        now = self.now
        self.messages.append(
            (row_id, now, now, item.channel, item.sender, item.kind, item.message_id, stored.dedup_key,
             item.content_hash, lane, item.state.value, item.detail, item.ack, now if accepted else None,
             stored.size, stored.sha256)
        )  # fmt: skip
        self.payloads.append((row_id, stored.raw))
        if accepted:
            self.heads.setdefault(lane, row_id)
            if stored.dedup_key:
                # Rejected messages do not hold their key: a corrected resend with the same id is welcome.
                self.dedup.append((stored.dedup_key, item.content_hash, row_id, now))
                self.seen[stored.dedup_key] = (item.content_hash, row_id, item.ack)
        return AppendResult(row_id=row_id)
