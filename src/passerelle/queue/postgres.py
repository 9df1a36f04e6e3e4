"""PostgreSQL journal: for sites that run several gateway instances on one database.

Same contract and same shape as the SQLite journal (``queue/sqlite.py``): a ``messages`` table and its
``payloads``, one ``lanes`` row per ordering key holding its head, a ``dedup`` table, ``events``. What
changes with several instances sharing the schema:

* **Claims** pick due lane rows with ``FOR UPDATE SKIP LOCKED``, so two instances never lease the same
  lane, and a lane whose row an append or a settle is holding is simply skipped for now.
* **Appends** are group-committed like SQLite's: concurrent callers of one instance share one
  transaction and one commit; each returns only after the commit that holds its rows. Inside that
  transaction the lane rows are locked first (sorted, ``INSERT ... ON CONFLICT DO UPDATE``), and only
  then are message ids taken from the sequence, so ids inside a lane follow commit order even when two
  instances append to the same patient at once ("intake takes the lane before it takes the id").
* **Dedup** keys are inserted with ``ON CONFLICT DO NOTHING`` in that same transaction: a concurrent
  duplicate from another instance waits for the first transaction and then resolves to
  duplicate/conflict, never to a second row.

* **Retention** deletes in batches too, skipping rows another transaction holds (``SKIP LOCKED``);
  autovacuum makes the space reusable.

Connections: one per append committer, and up to ``pool_size`` more for claims, settles and reads,
opened on demand (``autocommit``; explicit transactions where several statements must hold
together). ``search_path`` is the journal's schema and ``TimeZone`` is UTC on every connection.
Every database failure is raised as :class:`QueueUnavailableError` (``raise ... from``); the message
carries the error class and SQLSTATE only, never values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from passerelle.errors import QueueUnavailableError
from passerelle.queue import _pg, _rows, _sql, migrations, model
from passerelle.queue._pg import Conn, text, wrap
from passerelle.queue._pg_append import AppendTx, Retry
from passerelle.queue._rows import Pending
from passerelle.queue._sql import pg
from passerelle.queue.model import AppendResult, Event, Inbound, Row, State

log = logging.getLogger(__name__)

_RETRIES = 5
#: Errors after which the whole append transaction is simply run again.
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, Retry)
_SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
_PURGE_PAYLOADS = (
    f"WITH c AS ({pg(_sql.PAYLOADS_DUE)}{_SKIP_LOCKED}), "
    "p AS (DELETE FROM payloads WHERE row_id IN (SELECT id FROM c)) "
    "UPDATE messages SET purged_at = %s WHERE id IN (SELECT id FROM c)"
)
_DELETE_RECORDS = (
    f"WITH c AS ({pg(_sql.RECORDS_DUE)}{_SKIP_LOCKED}), "
    "e AS (DELETE FROM events WHERE row_id IN (SELECT id FROM c)), "
    "p AS (DELETE FROM payloads WHERE row_id IN (SELECT id FROM c)), "
    "d AS (DELETE FROM dedup USING c WHERE dedup.dedup_key = c.dedup_key AND dedup.row_id = c.id) "
    "DELETE FROM messages WHERE id IN (SELECT id FROM c)"
)


_CLAIM = (
    "WITH c AS ("
    " SELECT lane FROM lanes WHERE head_id IS NOT NULL AND due_at IS NOT NULL AND due_at <= %(now)s"
    " AND (lease_until IS NULL OR lease_until <= %(now)s) ORDER BY due_at LIMIT %(limit)s"
    " FOR UPDATE SKIP LOCKED"
    "), u AS ("
    " UPDATE lanes SET lease_until = %(until)s, worker = %(worker)s FROM c WHERE lanes.lane = c.lane"
    " RETURNING lanes.head_id, lanes.due_at"
    f") SELECT {_rows.SELECT_ROW} FROM u JOIN messages m ON m.id = u.head_id"
    " LEFT JOIN payloads p ON p.row_id = m.id ORDER BY u.due_at, m.id"
)
_HEARTBEAT = (
    "INSERT INTO workers (name, seen_at) VALUES (%(me)s, %(now)s) "
    "ON CONFLICT (name) DO UPDATE SET seen_at = GREATEST(workers.seen_at, excluded.seen_at)"
)
#: A worker is gone when its heartbeat is older than the cutoff, or when it has none (its row was
#: removed when it was found dead): its row goes, its claims still leased come back.
_REAP = (
    "WITH gone AS (DELETE FROM workers WHERE seen_at < %(cutoff)s AND name <> %(me)s) "
    "UPDATE lanes SET lease_until = NULL, worker = NULL "
    "WHERE worker IS NOT NULL AND worker <> %(me)s AND lease_until > %(now)s "
    "AND NOT EXISTS (SELECT 1 FROM workers w WHERE w.name = lanes.worker AND w.seen_at >= %(cutoff)s)"
)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _row(rec: Sequence[Any]) -> Row:
    return _rows.make_row(rec, _utc)


def _same(value: datetime) -> datetime:
    return value


class PostgresJournal:
    """Journal backed by a PostgreSQL schema (created and migrated at :meth:`open`).

    ``max_batch`` bounds how many appended messages one commit may carry; ``pool_size`` bounds the
    connections used for claims, settles and reads; each of the ``committers`` append transactions that
    may run at once has its own connection. ``set_deadline`` is offered like the SQLite backend's.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "passerelle",
        max_batch: int = 512,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        committers: int = 1,
    ) -> None:
        if not schema:
            raise ValueError("schema must not be empty")
        if pool_size < 1 or committers < 1:
            raise ValueError("pool_size and committers must be at least 1")
        self.dsn = dsn
        self.schema = schema
        self.max_batch = max_batch
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.committers = committers
        self._pool: _pg.Pool | None = None
        self._commit_conns: list[Conn | None] = []
        self._pending: list[Pending] = []
        self._committer_tasks: list[asyncio.Task[None]] = []
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._force_sync_commit = False

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._closing = False
        try:
            conn = await self._connect(check=True)
            try:
                lock = ("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"passerelle-journal:{self.schema}",))
                await _pg.migrate(conn, self.schema, "schema_migrations", lock, migrations.load("postgres"), named=True)
            except BaseException:
                await _pg.close_quietly(conn)
                raise
        except psycopg.Error as exc:
            raise wrap(exc) from exc
        self._commit_conns = [conn] + [None] * (self.committers - 1)
        self._pool = _pg.Pool(self._connect, self.pool_size)
        self._wakeup = asyncio.Event()
        self._committer_tasks = [
            asyncio.create_task(self._commit_loop(slot), name=f"journal-committer-{slot}")
            for slot in range(self.committers)
        ]

    async def _connect(self, *, check: bool = False) -> Conn:
        params: dict[str, Any] = {"autocommit": True}
        given = conninfo_to_dict(self.dsn)
        if "connect_timeout" not in given:
            params["connect_timeout"] = max(1, round(self.connect_timeout))
        if "application_name" not in given:
            params["application_name"] = "passerelle-journal"
        conn = await psycopg.AsyncConnection.connect(self.dsn, **params)
        try:
            path = sql.Identifier(self.schema).as_string(conn)
            cur = await conn.execute(
                "SELECT set_config('search_path', %s, false), set_config('TimeZone', 'UTC', false), "
                "current_setting('synchronous_commit'), current_setting('fsync')",
                (path,),
            )
            rec = await cur.fetchone()
            assert rec is not None
            if check and rec[3] != "on":
                raise QueueUnavailableError(
                    "journal durability not guaranteed (the PostgreSQL server runs with fsync=off)"
                )
            if rec[2] == "off":
                # A commit must be flushed before append returns: ask for it on our own sessions.
                self._force_sync_commit = True
            if self._force_sync_commit:
                await conn.execute("SET synchronous_commit = on")
        except BaseException:
            await _pg.close_quietly(conn)
            raise
        return conn

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return tuple(self._committer_tasks)

    async def check_writable(self) -> None:
        """The database answers and accepts writes: not a standby in recovery, not read-only by default."""
        recs = await self._fetchall("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
        recovery, read_only = recs[0]
        if recovery or read_only == "on":
            raise QueueUnavailableError("the journal's database is read-only (a standby, or read-only by default)")

    async def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        if self._committer_tasks:
            assert self._wakeup is not None
            self._wakeup.set()
            await asyncio.gather(*self._committer_tasks)
            self._committer_tasks = []
        for conn in self._commit_conns:
            if conn is not None:
                await _pg.close_quietly(conn)
        self._commit_conns = []
        await self._pool.close()
        self._pool = None
        self._wakeup = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise QueueUnavailableError("journal is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise wrap(exc) from exc

    async def _fetchall(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[TupleRow]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _exec(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount

    async def _count(self, query: str, params: Sequence[Any]) -> int:
        recs = await self._fetchall(query, params)
        return int(recs[0][0]) if recs else 0

    # --- append (group commit) --------------------------------------------------------------------

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        if self._wakeup is None or self._closing:
            raise QueueUnavailableError("journal is not open")
        if not items:
            return []
        fut: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        self._wakeup.set()
        return await fut

    async def _commit_loop(self, slot: int) -> None:
        """One committer: takes everything pending (up to ``max_batch`` items) into one transaction.

        Several committers overlap one transaction's commit (its WAL flush) with the next one's
        statements; they are ordered against each other by the lane locks, like two instances are.
        """
        assert self._wakeup is not None
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._commit_batch(_rows.take_batch(self._pending, self.max_batch), slot)

    async def _commit_batch(self, batch: list[Pending], slot: int) -> None:
        try:
            results = await self._append_groups([b[0] for b in batch], slot)
        except psycopg.Error as exc:
            if len(batch) > 1 and not isinstance(exc, psycopg.OperationalError):
                # Something in one caller's items (not the server) failed: commit callers one by one,
                # so only the culprit gets the error.
                for entry in batch:
                    await self._commit_batch([entry], slot)
                return
            err = wrap(exc)
            err.__cause__ = exc
            _rows.fail(batch, err)
            return
        except Exception as exc:  # noqa: BLE001 - every caller of this commit gets the failure
            err = exc if isinstance(exc, QueueUnavailableError) else QueueUnavailableError("journal commit failed")
            if err is not exc:
                err.__cause__ = exc
            _rows.fail(batch, err)
            return
        _rows.resolve(batch, results)

    async def _commit_connection(self, slot: int) -> Conn:
        conn = self._commit_conns[slot]
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                await _pg.close_quietly(conn)
            self._commit_conns[slot] = None
            conn = self._commit_conns[slot] = await self._connect()
        return conn

    async def _append_groups(self, groups: list[Sequence[Inbound]], slot: int) -> list[list[AppendResult]]:
        flat = [item for group in groups for item in group]
        attempt = 0
        while True:
            conn = await self._commit_connection(slot)
            try:
                async with conn.transaction():
                    results = await AppendTx(conn, flat).run()
                break
            except _RETRYABLE:
                attempt += 1
                if attempt >= _RETRIES:
                    raise
                log.info("journal append retried", extra={"attempt": attempt})
        out: list[list[AppendResult]] = []
        pos = 0
        for group in groups:
            out.append(results[pos : pos + len(group)])
            pos += len(group)
        return out

    # --- claim / settle ---------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        if limit <= 0:
            return []
        async with self._conn() as conn, conn.transaction():
            # Not waited for on disk: a lost claim only makes its lane claimable again.
            await conn.execute("SET LOCAL synchronous_commit = off")
            cur = await conn.execute(
                _CLAIM,
                {"now": now, "limit": limit, "until": now + timedelta(seconds=lease_seconds), "worker": text(worker)},
            )
            recs = await cur.fetchall()
        return [_row(r) for r in recs]

    async def heartbeat(self, worker: str, now: datetime, dead_after_s: float) -> int:
        """One transaction, not waited for on disk: this worker's heartbeat, then the rows of the dead
        workers removed and their claims freed."""
        params = {"me": text(worker), "now": now, "cutoff": now - timedelta(seconds=dead_after_s)}
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(_HEARTBEAT, params)
            cur = await conn.execute(_REAP, params)
            return cur.rowcount

    async def settle(self, row_id: int, settlement: model.Settlement, now: datetime) -> None:
        await self.settle_many([(row_id, settlement)], now)

    async def settle_many(self, settlements: Sequence[tuple[int, model.Settlement]], now: datetime) -> None:
        if not settlements:
            return
        attempt = 0
        while True:
            try:
                async with self._conn() as conn, conn.transaction():
                    await self._settle_all(conn, settlements, now)
                return
            except QueueUnavailableError as exc:
                if not isinstance(exc.__cause__, _RETRYABLE) or attempt >= _RETRIES:
                    raise
                attempt += 1

    async def _settle_all(self, conn: Conn, settlements: Sequence[tuple[int, model.Settlement]], now: datetime) -> None:
        ids = [row_id for row_id, _ in settlements]
        cur = await conn.execute("SELECT id, lane FROM messages WHERE id = ANY(%s::bigint[])", (ids,))
        lanes: dict[int, str] = dict(await cur.fetchall())
        # Lanes first (sorted, like appends), then the messages: the order every writer here follows.
        await conn.execute(
            "SELECT 1 FROM lanes WHERE lane = ANY(%s::text[]) ORDER BY lane FOR UPDATE", (sorted(set(lanes.values())),)
        )
        for row_id, s in settlements:
            if row_id in lanes:
                await self._settle_one(conn, row_id, lanes[row_id], s, now)
        await self._insert_events(conn, [e for row_id, s in settlements if row_id in lanes for e in s.events])

    async def _settle_one(self, conn: Conn, row_id: int, lane: str, s: model.Settlement, now: datetime) -> None:
        document_id, patient_id = text(s.document_id), text(s.patient_id)
        step = _rows.attempt_increment(s.state)
        await conn.execute(
            pg(_sql.SETTLE),
            (s.state.value, text(s.detail), step, s.next_due, now, *(document_id,) * 2, *(patient_id,) * 2, s.deadline,
             row_id),
        )  # fmt: skip
        if s.state in (State.RETRY, State.PARKED):
            await conn.execute(pg(_sql.LANE_WAIT), (s.next_due if s.next_due is not None else now, lane, row_id))
        elif s.state is State.DEAD:
            await conn.execute(pg(_sql.LANE_HOLD), (lane, row_id))
        else:  # delivered, refused, rejected: the lane moves on
            await self._advance_lane(conn, lane, now)

    @staticmethod
    async def _advance_lane(conn: Conn, lane: str, now: datetime) -> None:
        cur = await conn.execute(pg(_sql.NEXT_HEAD), (lane,))
        nxt = await cur.fetchone()
        if nxt is None:
            await conn.execute("DELETE FROM lanes WHERE lane = %s", (lane,))
            return
        due = _rows.lane_due(State(nxt[1]), nxt[2], now)
        await conn.execute(
            "INSERT INTO lanes (lane, head_id, due_at) VALUES (%s, %s, %s) ON CONFLICT (lane) DO UPDATE SET "
            "head_id = excluded.head_id, due_at = excluded.due_at, lease_until = NULL, worker = NULL",
            (lane, nxt[0], due),
        )

    @staticmethod
    async def _insert_events(conn: Conn, events: Sequence[Event]) -> None:
        if not events:
            return
        await conn.execute(
            "INSERT INTO events (row_id, at, kind, detail, data) "
            "SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::jsonb[])",
            (
                [e.row_id for e in events],
                [e.at for e in events],
                [text(e.kind) for e in events],
                [text(e.detail) for e in events],
                [text(json.dumps(e.data, sort_keys=True, default=str)) for e in events],
            ),
        )

    async def requeue(self, row_id: int, now: datetime, detail: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute("SELECT lane FROM messages WHERE id = %s", (row_id,))
            rec = await cur.fetchone()
            if rec is None:
                return False
            lane: str = rec[0]
            cur = await conn.execute(
                "INSERT INTO lanes (lane) VALUES (%s) ON CONFLICT (lane) DO UPDATE SET head_id = lanes.head_id "
                "RETURNING head_id",
                (lane,),
            )
            head_rec = await cur.fetchone()
            head: int | None = head_rec[0] if head_rec else None
            cur = await conn.execute(pg(_sql.REQUEUE), (now, now, text(detail), row_id))
            if cur.rowcount == 0:
                if head is None:
                    await conn.execute("DELETE FROM lanes WHERE lane = %s AND head_id IS NULL", (lane,))
                return False
            await conn.execute(pg(_sql.REPLAY_EVENT), (row_id, now, text(detail)))
            if head is None or head >= row_id:
                await conn.execute(
                    "UPDATE lanes SET head_id = %s, due_at = %s, lease_until = NULL, worker = NULL WHERE lane = %s",
                    (row_id, now, lane),
                )
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        await self._exec(pg(_sql.SET_DEADLINE), (deadline, row_id))

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, row_id: int) -> Row | None:
        recs = await self._fetchall(pg(_sql.ROW_BY_ID), (row_id,))
        return _row(recs[0]) if recs else None

    async def find(self, query: model.Query) -> list[Row]:
        where, params = _rows.query_filters(query, "%s", _same, text)
        up = _rows.upward(query)
        recs = await self._fetchall(pg(_sql.find(up)).format(where=where), (*params, _rows.page_size(query)))
        rows = [_row(r) for r in recs]
        return rows[::-1] if up else rows

    async def events(self, row_id: int) -> list[Event]:
        recs = await self._fetchall(pg(_sql.EVENTS_OF), (row_id,))
        return [Event(r[0], r[1].astimezone(UTC), r[2], r[3], dict(r[4])) for r in recs]

    async def add_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._conn() as conn:
            await self._insert_events(conn, events)

    async def counts(self) -> dict[State, int]:
        found = {r[0]: int(r[1]) for r in await self._fetchall(_sql.COUNTS)}
        return {s: found.get(s.value, 0) for s in State}

    async def oldest_pending(self) -> datetime | None:
        recs = await self._fetchall(_sql.OLDEST_PENDING)
        return _utc(recs[0][0]) if recs else None

    async def activity(self, since: datetime) -> model.Activity:
        received = await self._fetchall(pg(_sql.RECEIVED_SINCE), (since,))
        delivered = await self._fetchall(pg(_sql.DELIVERED_SINCE), (since,))
        return model.Activity(int(received[0][0]), int(delivered[0][0]))

    # --- registry, series, patient map ------------------------------------------------------------

    async def registry_get(self, ins: str) -> model.RegistryEntry | None:
        recs = await self._fetchall(pg(_sql.REGISTRY_GET), (text(ins),))
        if not recs:
            return None
        r = recs[0]
        return model.RegistryEntry(r[0], r[1], r[2], r[3], r[4], _utc(r[5]), int(r[6]))

    async def registry_put(self, entry: model.RegistryEntry) -> None:
        e = entry
        at = e.updated_at or datetime.now(UTC)
        fields = (e.ins, e.ins_oid, e.dmp_status, e.feeding, e.consultation)
        await self._exec(pg(_sql.REGISTRY_PUT), (*map(text, fields), at, e.source_row))

    async def series_get(self, series_key: str) -> model.SeriesEntry | None:
        recs = await self._fetchall(pg(_sql.SERIES_GET), (text(series_key),))
        return model.SeriesEntry(*recs[0]) if recs else None

    async def series_put(self, entry: model.SeriesEntry, now: datetime) -> None:
        e = entry
        params = (text(e.series_key), text(e.unique_id), text(e.set_id), e.version, e.row_id, now)
        await self._exec(pg(_sql.SERIES_PUT), params)

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        recs = await self._fetchall(pg(_sql.PATIENT_MAP_GET), (text(sender), text(local_id)))
        return (recs[0][0], recs[0][1]) if recs else None

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        await self._exec(pg(_sql.PATIENT_MAP_PUT), tuple(map(text, (sender, local_id, ins, ins_oid))))

    # --- retention --------------------------------------------------------------------------------
    # Rows another transaction holds (a settle, a replay) are skipped; the next batch takes them.

    async def payloads_due(self, state: State, settled_before: datetime) -> int:
        return await self._count(pg(_sql.COUNT_PAYLOADS), (_rows.final_state(state), settled_before))

    async def purge_payloads(self, state: State, settled_before: datetime, limit: int, now: datetime) -> int:
        """One statement: the payloads go, the rows say so (rows a settle or a replay holds are skipped)."""
        return await self._exec(_PURGE_PAYLOADS, (_rows.final_state(state), settled_before, limit, now))

    async def records_due(self, settled_before: datetime) -> int:
        return await self._count(pg(_sql.COUNT_RECORDS), (settled_before,))

    async def delete_records(self, settled_before: datetime, limit: int) -> int:
        """One statement: the rows, their events and the dedup keys they hold."""
        return await self._exec(_DELETE_RECORDS, (settled_before, limit))

    async def reclaim_space(self, max_pages: int) -> int:
        """Nothing to do: PostgreSQL's autovacuum makes deleted rows' space reusable."""
        return 0
