"""SQLite journal: the embedded default.

Durability: WAL with ``synchronous=FULL``, checked at open (a journal that cannot guarantee an fsync'd
commit refuses to start). Every statement runs on one dedicated thread that owns the connection.
Appends are *group-committed*: while one transaction is being committed, new appends queue up and the
next transaction takes them all, so many connections share one fsync while each caller still returns
only after the commit that contains its rows.
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
from passerelle.queue import migrations
from passerelle.queue.model import (
    AppendResult,
    Event,
    Inbound,
    Query,
    RegistryEntry,
    Row,
    SeriesEntry,
    Settlement,
    State,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_BLOCKING = "('accepted', 'retry', 'parked', 'dead')"
_ROW_COLUMNS = (
    "id, raw, channel, sender, kind, message_id, dedup_key, lane, state, detail, attempts, "
    "received_at, next_due, updated_at, document_id, patient_id, deadline"
)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row(rec: sqlite3.Row | tuple[Any, ...]) -> Row:
    return Row(
        id=rec[0],
        raw=bytes(rec[1]),
        channel=rec[2],
        sender=rec[3],
        kind=rec[4],
        message_id=rec[5],
        dedup_key=rec[6],
        lane=rec[7],
        state=State(rec[8]),
        detail=rec[9],
        attempts=rec[10],
        received_at=datetime.fromtimestamp(rec[11], UTC),
        next_due=_dt(rec[12]),
        updated_at=datetime.fromtimestamp(rec[13], UTC),
        document_id=rec[14],
        patient_id=rec[15],
        deadline=_dt(rec[16]),
    )


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
        self._pending: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closing = False
        await self._call(self._open_sync)
        self._wakeup = asyncio.Event()
        self._committer = asyncio.create_task(self._commit_loop(), name="journal-committer")

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if str(mode).lower() != "wal" or int(sync) != 2:
            conn.close()
            raise QueueUnavailableError(f"journal durability not guaranteed (journal_mode={mode}, synchronous={sync})")
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate(conn)
        self._conn = conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations.load("sqlite"):
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, datetime.now(UTC).timestamp()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("journal migration applied", extra={"migration": name})

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

    def _close_sync(self) -> None:
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

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueUnavailableError("journal is not open")
        return self._conn

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
                batch: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]] = []
                count = 0
                while self._pending and (not batch or count + len(self._pending[0][0]) <= self.max_batch):
                    entry = self._pending.pop(0)
                    batch.append(entry)
                    count += len(entry[0])
                try:
                    results = await self._call(self._append_sync, [b[0] for b in batch])
                except Exception as exc:  # noqa: BLE001 - every caller of this commit gets the failure
                    err = (
                        exc
                        if isinstance(exc, QueueUnavailableError)
                        else QueueUnavailableError("journal commit failed")
                    )
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, fut), res in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
            if self._closing and not self._pending:
                return

    def _append_sync(self, groups: list[Sequence[Inbound]]) -> list[list[AppendResult]]:
        """One transaction for every item of every group: one dedup lookup, batched inserts, one fsync."""
        conn = self.conn
        now = datetime.now(UTC).timestamp()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = self._append_batch(conn, groups, now)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return out

    @staticmethod
    def _append_batch(
        conn: sqlite3.Connection, groups: list[Sequence[Inbound]], now: float
    ) -> list[list[AppendResult]]:
        keys = sorted({item.dedup_key for group in groups for item in group if item.dedup_key})
        seen: dict[str, tuple[str, int, bytes]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, content_hash, row_id, ack in conn.execute(
                "SELECT d.dedup_key, d.content_hash, d.row_id, m.ack FROM dedup d JOIN messages m ON m.id = d.row_id "
                f"WHERE d.dedup_key IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                seen[key] = (content_hash, row_id, bytes(ack))
        # We hold the write lock (BEGIN IMMEDIATE): ids can be assigned here and inserted in bulk.
        next_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]) + 1
        messages: list[tuple[Any, ...]] = []
        dedup: list[tuple[Any, ...]] = []
        heads: dict[str, int] = {}
        out: list[list[AppendResult]] = []
        for group in groups:
            results: list[AppendResult] = []
            for item in group:
                known = seen.get(item.dedup_key) if item.dedup_key else None
                if known is not None:
                    same = known[0] == item.content_hash
                    results.append(
                        AppendResult(row_id=known[1], duplicate=same, conflict=not same, stored_ack=known[2])
                    )
                    continue
                row_id, next_id = next_id, next_id + 1
                lane = item.lane or f"row:{uuid.uuid4().hex}"
                accepted = item.state is State.ACCEPTED
                messages.append(
                    (row_id, now, now, item.channel, item.sender, item.kind, item.message_id, item.dedup_key,
                     item.content_hash, lane, item.state.value, item.detail, item.raw, item.ack, now if accepted else None)
                )  # fmt: skip
                if accepted:
                    heads.setdefault(lane, row_id)
                    if item.dedup_key:
                        # Rejected messages do not hold their key: a corrected resend with the same id is welcome.
                        dedup.append((item.dedup_key, item.content_hash, row_id, now))
                        seen[item.dedup_key] = (item.content_hash, row_id, item.ack)
                results.append(AppendResult(row_id=row_id))
            out.append(results)
        conn.executemany(
            "INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, message_id, dedup_key, "
            "content_hash, lane, state, detail, raw, ack, next_due) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            messages,
        )
        conn.executemany("INSERT INTO dedup (dedup_key, content_hash, row_id, created_at) VALUES (?,?,?,?)", dedup)
        # A lane that already has a head keeps it (its head is older); a new or idle lane starts here.
        conn.executemany(
            "INSERT INTO lanes (lane, head_id, due_at) VALUES (?, ?, ?) "
            "ON CONFLICT (lane) DO UPDATE SET "
            "  due_at = CASE WHEN lanes.head_id IS NULL THEN excluded.due_at ELSE lanes.due_at END, "
            "  head_id = COALESCE(lanes.head_id, excluded.head_id)",
            [(lane, head, now) for lane, head in heads.items()],
        )
        return out

    # --- claim / settle ---------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        return await self._call(self._claim_sync, worker, limit, lease_seconds, _ts(now))

    def _claim_sync(self, worker: str, limit: int, lease_seconds: float, now: float) -> list[Row]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            lanes = conn.execute(
                "SELECT lane, head_id FROM lanes WHERE head_id IS NOT NULL AND due_at IS NOT NULL "
                "AND due_at <= ? AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            rows: list[Row] = []
            for lane, head_id in lanes:
                conn.execute(
                    "UPDATE lanes SET lease_until = ?, worker = ? WHERE lane = ?",
                    (now + lease_seconds, worker, lane),
                )
                rec = conn.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?", (head_id,)).fetchone()
                if rec is not None:
                    rows.append(_row(rec))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return rows

    async def settle(self, row_id: int, settlement: Settlement, now: datetime) -> None:
        await self._call(self._settle_sync, row_id, settlement, _ts(now))

    def _settle_sync(self, row_id: int, s: Settlement, now: float) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            rec = conn.execute("SELECT lane, state FROM messages WHERE id = ?", (row_id,)).fetchone()
            if rec is None:
                conn.execute("ROLLBACK")
                return
            lane = rec[0]
            next_due = _ts(s.next_due) if s.next_due is not None else None
            conn.execute(
                "UPDATE messages SET state = ?, detail = ?, attempts = attempts + ?, next_due = ?, updated_at = ?, "
                "document_id = CASE WHEN ? <> '' THEN ? ELSE document_id END, "
                "patient_id = CASE WHEN ? <> '' THEN ? ELSE patient_id END WHERE id = ?",
                (
                    s.state.value,
                    s.detail,
                    1 if s.state in (State.DELIVERED, State.RETRY, State.DEAD) else 0,
                    next_due,
                    now,
                    s.document_id,
                    s.document_id,
                    s.patient_id,
                    s.patient_id,
                    row_id,
                ),
            )
            self._insert_events(conn, s.events)
            if s.state in (State.RETRY, State.PARKED):
                conn.execute(
                    "UPDATE lanes SET due_at = ?, lease_until = NULL, worker = NULL WHERE lane = ? AND head_id = ?",
                    (next_due if next_due is not None else now, lane, row_id),
                )
            elif s.state is State.DEAD:
                conn.execute(
                    "UPDATE lanes SET due_at = NULL, lease_until = NULL, worker = NULL WHERE lane = ? AND head_id = ?",
                    (lane, row_id),
                )
            else:  # delivered, refused, rejected: the lane moves on
                self._advance_lane(conn, lane, now)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _advance_lane(conn: sqlite3.Connection, lane: str, now: float) -> None:
        nxt = conn.execute(
            f"SELECT id, state, next_due FROM messages WHERE lane = ? AND state IN {_BLOCKING} ORDER BY id LIMIT 1",
            (lane,),
        ).fetchone()
        if nxt is None:
            conn.execute("DELETE FROM lanes WHERE lane = ?", (lane,))
            return
        due = _lane_due(State(nxt[1]), nxt[2], now)
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
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            rec = conn.execute("SELECT lane, state FROM messages WHERE id = ?", (row_id,)).fetchone()
            if rec is None or rec[1] not in (State.DEAD.value, State.REFUSED.value, State.PARKED.value):
                conn.execute("ROLLBACK")
                return False
            lane = rec[0]
            conn.execute(
                "UPDATE messages SET state = 'accepted', attempts = 0, next_due = ?, deadline = NULL, "
                "updated_at = ?, detail = ? WHERE id = ?",
                (now, now, detail, row_id),
            )
            conn.execute(
                "INSERT INTO events (row_id, at, kind, detail) VALUES (?,?,?,?)",
                (row_id, now, "replay", detail),
            )
            head = conn.execute("SELECT head_id FROM lanes WHERE lane = ?", (lane,)).fetchone()
            if head is None:
                conn.execute("INSERT INTO lanes (lane, head_id, due_at) VALUES (?,?,?)", (lane, row_id, now))
            elif head[0] is None or head[0] >= row_id:
                conn.execute(
                    "UPDATE lanes SET head_id = ?, due_at = ?, lease_until = NULL WHERE lane = ?",
                    (row_id, now, lane),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        await self._call(
            self._exec,
            "UPDATE messages SET deadline = ? WHERE id = ? AND deadline IS NULL",
            (_ts(deadline), row_id),
        )

    def _exec(self, sql: str, params: tuple[Any, ...]) -> None:
        self.conn.execute(sql, params)

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, row_id: int) -> Row | None:
        def run() -> Row | None:
            rec = self.conn.execute(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = ?", (row_id,)).fetchone()
            return _row(rec) if rec else None

        return await self._call(run)

    async def find(self, query: Query) -> list[Row]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.states:
            clauses.append(f"state IN ({','.join('?' * len(query.states))})")
            params.extend(s.value for s in query.states)
        for column, value in (
            ("sender", query.sender),
            ("patient_id", query.patient_id),
            ("document_id", query.document_id),
        ):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("received_at >= ?")
            params.append(_ts(query.since))
        if query.until is not None:
            clauses.append("received_at < ?")
            params.append(_ts(query.until))
        if query.before_id is not None:
            clauses.append("id < ?")
            params.append(query.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_ROW_COLUMNS} FROM messages {where} ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(query.limit, 1000)))

        def run() -> list[Row]:
            return [_row(r) for r in self.conn.execute(sql, params).fetchall()]

        return await self._call(run)

    async def events(self, row_id: int) -> list[Event]:
        def run() -> list[Event]:
            recs = self.conn.execute(
                "SELECT row_id, at, kind, detail, data FROM events WHERE row_id = ? ORDER BY id", (row_id,)
            ).fetchall()
            return [
                Event(
                    row_id=r[0],
                    at=datetime.fromtimestamp(r[1], UTC),
                    kind=r[2],
                    detail=r[3],
                    data=json.loads(r[4]),
                )
                for r in recs
            ]

        return await self._call(run)

    async def add_events(self, events: Sequence[Event]) -> None:
        def run() -> None:
            self._insert_events(self.conn, events)

        await self._call(run)

    async def counts(self) -> dict[State, int]:
        def run() -> dict[State, int]:
            found = dict(self.conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
            return {s: int(found.get(s.value, 0)) for s in State}

        return await self._call(run)

    async def oldest_pending(self) -> datetime | None:
        def run() -> datetime | None:
            rec = self.conn.execute(
                "SELECT MIN(received_at) FROM messages WHERE state IN ('accepted', 'retry', 'parked')"
            ).fetchone()
            return _dt(rec[0]) if rec else None

        return await self._call(run)

    # --- registry, series, patient map ------------------------------------------------------------

    async def registry_get(self, ins: str) -> RegistryEntry | None:
        def run() -> RegistryEntry | None:
            r = self.conn.execute(
                "SELECT ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row "
                "FROM consent_registry WHERE ins = ?",
                (ins,),
            ).fetchone()
            return RegistryEntry(r[0], r[1], r[2], r[3], r[4], _dt(r[5]), r[6]) if r else None

        return await self._call(run)

    async def registry_put(self, entry: RegistryEntry) -> None:
        at = _ts(entry.updated_at) if entry.updated_at else datetime.now(UTC).timestamp()
        await self._call(
            self._exec,
            "INSERT INTO consent_registry (ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (ins) DO UPDATE SET ins_oid = excluded.ins_oid, "
            "dmp_status = excluded.dmp_status, feeding = excluded.feeding, consultation = excluded.consultation, "
            "updated_at = excluded.updated_at, source_row = excluded.source_row",
            (
                entry.ins,
                entry.ins_oid,
                entry.dmp_status,
                entry.feeding,
                entry.consultation,
                at,
                entry.source_row,
            ),
        )

    async def series_get(self, series_key: str) -> SeriesEntry | None:
        def run() -> SeriesEntry | None:
            r = self.conn.execute(
                "SELECT series_key, unique_id, set_id, version, row_id FROM document_series WHERE series_key = ?",
                (series_key,),
            ).fetchone()
            return SeriesEntry(*r) if r else None

        return await self._call(run)

    async def series_put(self, entry: SeriesEntry, now: datetime) -> None:
        await self._call(
            self._exec,
            "INSERT INTO document_series (series_key, unique_id, set_id, version, row_id, updated_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (series_key) DO UPDATE SET unique_id = excluded.unique_id, set_id = excluded.set_id, "
            "version = excluded.version, row_id = excluded.row_id, updated_at = excluded.updated_at",
            (entry.series_key, entry.unique_id, entry.set_id, entry.version, entry.row_id, _ts(now)),
        )

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        def run() -> tuple[str, str] | None:
            r = self.conn.execute(
                "SELECT ins, ins_oid FROM patient_map WHERE sender = ? AND local_id = ?", (sender, local_id)
            ).fetchone()
            return (r[0], r[1]) if r else None

        return await self._call(run)

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        await self._call(
            self._exec,
            "INSERT INTO patient_map (sender, local_id, ins, ins_oid) VALUES (?,?,?,?) "
            "ON CONFLICT (sender, local_id) DO UPDATE SET ins = excluded.ins, ins_oid = excluded.ins_oid",
            (sender, local_id, ins, ins_oid),
        )


def _lane_due(state: State, next_due: float | None, now: float) -> float | None:
    """When a lane whose head is in ``state`` becomes claimable (None: it waits for an operator)."""
    if state is State.DEAD:
        return None
    if state is State.ACCEPTED or next_due is None:
        return now
    return next_due


def _split_sql(sql: str) -> list[str]:
    """Split a migration into statements (our migrations contain no ';' inside literals or triggers)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]
