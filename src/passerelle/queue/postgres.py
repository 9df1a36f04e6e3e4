"""PostgreSQL journal: for sites that run several gateway instances on one database.

Same contract and same shape as the SQLite journal (``queue/sqlite.py``): a ``messages`` table, one
``lanes`` row per ordering key holding its head, a ``dedup`` table, ``events``. What changes with
several instances sharing the schema:

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

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

Conn = psycopg.AsyncConnection[TupleRow]

_BLOCKING = "('accepted', 'retry', 'parked', 'dead')"
_COLUMNS = (
    "id",
    "raw",
    "channel",
    "sender",
    "kind",
    "message_id",
    "dedup_key",
    "lane",
    "state",
    "detail",
    "attempts",
    "received_at",
    "next_due",
    "updated_at",
    "document_id",
    "patient_id",
    "deadline",
)
_ROW_COLUMNS = ", ".join(_COLUMNS)
_M_ROW_COLUMNS = ", ".join(f"m.{c}" for c in _COLUMNS)
_RETRIES = 5


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _row(rec: Sequence[Any]) -> Row:
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
        received_at=rec[11].astimezone(UTC),
        next_due=_utc(rec[12]),
        updated_at=rec[13].astimezone(UTC),
        document_id=rec[14],
        patient_id=rec[15],
        deadline=_utc(rec[16]),
    )


def _text(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates; SQLite does. Keep the row, not the byte."""
    if value.isascii() and "\x00" not in value:
        return value
    value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _wrap(exc: BaseException) -> QueueUnavailableError:
    state = getattr(exc, "sqlstate", None)
    suffix = f" ({state})" if state else ""
    return QueueUnavailableError(f"journal error: {type(exc).__name__}{suffix}")


class _Pool:
    """A few autocommit connections, opened on demand, at most ``size`` at once."""

    def __init__(self, journal: PostgresJournal, size: int) -> None:
        self._journal = journal
        self._idle: list[Conn] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self._closed:
            raise QueueUnavailableError("journal is not open")
        await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else await self._journal._connect()
        except BaseException:
            self._slots.release()
            raise
        try:
            yield conn
        finally:
            await self._give_back(conn)
            self._slots.release()

    async def _give_back(self, conn: Conn) -> None:
        if self._closed or conn.closed or conn.broken:
            await _close_quietly(conn)
            return
        status = conn.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                await conn.rollback()
            except psycopg.Error:
                await _close_quietly(conn)
                return
        elif status is not TransactionStatus.IDLE:  # ACTIVE after a cancellation, or UNKNOWN
            await _close_quietly(conn)
            return
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close_quietly(conn)


async def _close_quietly(conn: Conn) -> None:
    try:
        await conn.close()
    except (psycopg.Error, OSError):
        log.debug("journal connection close failed", exc_info=True)


@dataclass
class _Plan:
    """Where each item of an append batch ends up (filled step by step inside the transaction)."""

    items: list[Inbound]
    lanes: list[str]
    keys: list[str]  # dedup keys as stored ("" = none)
    hashes: list[str]
    owner: dict[str, int]  # dedup key -> index of the first accepted item carrying it in this batch
    candidates: list[int]  # indexes that go to the database (not a repeat of an earlier item)


class _Retry(Exception):
    """A dedup key vanished between its conflict and its lookup (trimmed): run the append again."""


#: Errors after which the whole append transaction is simply run again.
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, _Retry)


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
        self._pool: _Pool | None = None
        self._commit_conns: list[Conn | None] = []
        self._pending: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]] = []
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
                await self._migrate(conn)
            except BaseException:
                await _close_quietly(conn)
                raise
        except psycopg.Error as exc:
            raise _wrap(exc) from exc
        self._commit_conns = [conn] + [None] * (self.committers - 1)
        self._pool = _Pool(self, self.pool_size)
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
            await _close_quietly(conn)
            raise
        return conn

    async def _migrate(self, conn: Conn) -> None:
        ident = sql.Identifier(self.schema)
        async with conn.transaction():
            # Several instances may start at once: one applies, the others wait and find it done.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"passerelle-journal:{self.schema}",))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
                ).format(ident)
            )
            cur = await conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))
            done = {r[0] for r in await cur.fetchall()}
            for version, name, text in migrations.load("postgres"):
                if version in done:
                    continue
                await conn.execute(text)
                await conn.execute(
                    sql.SQL("INSERT INTO {}.schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)").format(
                        ident
                    ),
                    (version, name, datetime.now(UTC)),
                )
                log.info("journal migration applied", extra={"migration": name})

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return tuple(self._committer_tasks)

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
                await _close_quietly(conn)
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
            raise _wrap(exc) from exc

    async def _fetchall(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[TupleRow]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _exec(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
        async with self._conn() as conn:
            await conn.execute(query, params)

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
            batch: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0][0]) <= self.max_batch):
                entry = self._pending.pop(0)
                batch.append(entry)
                count += len(entry[0])
            await self._commit_batch(batch, slot)

    async def _commit_batch(
        self, batch: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]], slot: int
    ) -> None:
        try:
            results = await self._append_groups([b[0] for b in batch], slot)
        except psycopg.Error as exc:
            if len(batch) > 1 and not isinstance(exc, psycopg.OperationalError):
                # Something in one caller's items (not the server) failed: commit callers one by one,
                # so only the culprit gets the error.
                for entry in batch:
                    await self._commit_batch([entry], slot)
                return
            err = _wrap(exc)
            err.__cause__ = exc
            self._fail(batch, err)
            return
        except Exception as exc:  # noqa: BLE001 - every caller of this commit gets the failure
            err = exc if isinstance(exc, QueueUnavailableError) else QueueUnavailableError("journal commit failed")
            if err is not exc:
                err.__cause__ = exc
            self._fail(batch, err)
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    @staticmethod
    def _fail(batch: list[tuple[Sequence[Inbound], asyncio.Future[list[AppendResult]]]], err: Exception) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    async def _commit_connection(self, slot: int) -> Conn:
        conn = self._commit_conns[slot]
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                await _close_quietly(conn)
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
                    results = await self._append_tx(conn, flat)
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

    @staticmethod
    def _plan(items: list[Inbound]) -> _Plan:
        lanes = [_text(it.lane) if it.lane else f"row:{uuid4().hex}" for it in items]
        keys = [_text(it.dedup_key) for it in items]
        hashes = [_text(it.content_hash) for it in items]
        owner: dict[str, int] = {}
        candidates: list[int] = []
        for i, it in enumerate(items):
            key = keys[i]
            if key and key in owner:
                continue  # answered like the earlier item of this batch that holds the key
            if key and it.state is State.ACCEPTED:
                owner[key] = i
            candidates.append(i)
        return _Plan(items, lanes, keys, hashes, owner, candidates)

    async def _append_tx(self, conn: Conn, items: list[Inbound]) -> list[AppendResult]:
        now = datetime.now(UTC)
        plan = self._plan(items)
        accepted = [i for i in plan.candidates if items[i].state is State.ACCEPTED]

        # 1. Lock the lanes (sorted, so two batches never wait on each other in a cycle) before any id.
        headless: set[str] = set()
        lock = sorted({plan.lanes[i] for i in accepted})
        if lock:
            cur = await conn.execute(
                "INSERT INTO lanes (lane) SELECT x FROM unnest(%s::text[]) AS t(x) ORDER BY x "
                "ON CONFLICT (lane) DO UPDATE SET head_id = lanes.head_id RETURNING lane, head_id",
                (lock,),
            )
            headless = {lane for lane, head in await cur.fetchall() if head is None}

        # 2. Message ids, now that the lanes are ours: ascending in item order.
        ids: dict[int, int] = {}
        if plan.candidates:
            cur = await conn.execute(
                "SELECT nextval('messages_id_seq') FROM generate_series(1, %s)", (len(plan.candidates),)
            )
            taken = sorted(r[0] for r in await cur.fetchall())
            ids = dict(zip(plan.candidates, taken, strict=True))

        # 3. Dedup keys of accepted items: first writer wins, across instances too.
        keys, hashes = plan.keys, plan.hashes
        keyed = sorted((keys[i], i) for i in accepted if keys[i])
        inserted: set[str] = set()
        if keyed:
            cur = await conn.execute(
                "INSERT INTO dedup (dedup_key, content_hash, row_id, created_at) "
                "SELECT k, h, r, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(k, h, r) ORDER BY k "
                "ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
                (
                    now,
                    [k for k, _ in keyed],
                    [hashes[i] for _, i in keyed],
                    [ids[i] for _, i in keyed],
                ),
            )
            inserted = {r[0] for r in await cur.fetchall()}

        # 4. Keys already held (by an earlier commit, or by a concurrent one that just committed).
        lookup = {keys[i] for i in plan.candidates if keys[i]} - inserted
        seen: dict[str, tuple[str, int, bytes]] = {}
        if lookup:
            cur = await conn.execute(
                "SELECT d.dedup_key, d.content_hash, d.row_id, COALESCE(m.ack, ''::bytea) FROM dedup d "
                "LEFT JOIN messages m ON m.id = d.row_id WHERE d.dedup_key = ANY(%s::text[])",
                (sorted(lookup),),
            )
            seen = {r[0]: (r[1], r[2], bytes(r[3])) for r in await cur.fetchall()}

        # 5. Decide every item's answer; collect the new rows.
        results: list[AppendResult] = []
        new: list[int] = []
        if {keys[i] for i in accepted if keys[i]} - inserted - seen.keys():
            raise _Retry
        for i in range(len(items)):
            key = keys[i]
            prior: tuple[str, int, bytes] | None = seen.get(key) if key else None
            if prior is None and key in inserted and plan.owner[key] < i:
                first = plan.owner[key]
                prior = (hashes[first], ids[first], items[first].ack)
            if prior is not None:
                same = prior[0] == hashes[i]
                results.append(AppendResult(row_id=prior[1], duplicate=same, conflict=not same, stored_ack=prior[2]))
                continue
            results.append(AppendResult(row_id=ids[i]))
            new.append(i)

        heads: dict[str, int] = {}
        for i in new:
            if items[i].state is State.ACCEPTED:
                lane = plan.lanes[i]
                if lane in headless and lane not in heads:
                    heads[lane] = ids[i]
        gone = sorted(headless - heads.keys())

        # 6. Rows and the new lane heads in one statement. The receipt is the row itself (no event row,
        #    as in the SQLite journal: intake commits stay small).
        if new:
            await conn.execute(
                "WITH m AS ("
                " INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, message_id, dedup_key,"
                "  content_hash, lane, state, detail, raw, ack, next_due)"
                " SELECT t.id, %(now)s, %(now)s, t.channel, t.sender, t.kind, t.message_id, t.dedup_key,"
                "  t.content_hash, t.lane, t.state, t.detail, t.raw, t.ack,"
                "  CASE WHEN t.state = 'accepted' THEN %(now)s::timestamptz END"
                " FROM unnest(%(id)s::bigint[], %(channel)s::text[], %(sender)s::text[], %(kind)s::text[],"
                "  %(message_id)s::text[], %(dedup_key)s::text[], %(content_hash)s::text[], %(lane)s::text[],"
                "  %(state)s::text[], %(detail)s::text[], %(raw)s::bytea[], %(ack)s::bytea[])"
                "  AS t(id, channel, sender, kind, message_id, dedup_key, content_hash, lane, state, detail, raw, ack)"
                "), up AS ("
                " UPDATE lanes SET head_id = u.head, due_at = %(now)s"
                " FROM unnest(%(up_lane)s::text[], %(up_head)s::bigint[]) AS u(lane, head) WHERE lanes.lane = u.lane"
                ") DELETE FROM lanes WHERE lane = ANY(%(gone)s::text[]) AND head_id IS NULL",
                {
                    "now": now,
                    "id": [ids[i] for i in new],
                    "channel": [_text(items[i].channel) for i in new],
                    "sender": [_text(items[i].sender) for i in new],
                    "kind": [_text(items[i].kind) for i in new],
                    "message_id": [_text(items[i].message_id) for i in new],
                    "dedup_key": [keys[i] for i in new],
                    "content_hash": [hashes[i] for i in new],
                    "lane": [plan.lanes[i] for i in new],
                    "state": [items[i].state.value for i in new],
                    "detail": [_text(items[i].detail) for i in new],
                    "raw": [bytes(items[i].raw) for i in new],
                    "ack": [bytes(items[i].ack) for i in new],
                    "up_lane": list(heads),
                    "up_head": list(heads.values()),
                    "gone": gone,
                },
            )
        elif gone:
            await conn.execute("DELETE FROM lanes WHERE lane = ANY(%s::text[]) AND head_id IS NULL", (gone,))
        return results

    # --- claim / settle ---------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, lease_seconds: float, now: datetime) -> list[Row]:
        if limit <= 0:
            return []
        recs = await self._fetchall(
            "WITH c AS ("
            " SELECT lane FROM lanes WHERE head_id IS NOT NULL AND due_at IS NOT NULL AND due_at <= %(now)s"
            " AND (lease_until IS NULL OR lease_until <= %(now)s) ORDER BY due_at LIMIT %(limit)s"
            " FOR UPDATE SKIP LOCKED"
            "), u AS ("
            " UPDATE lanes SET lease_until = %(until)s, worker = %(worker)s FROM c WHERE lanes.lane = c.lane"
            " RETURNING lanes.head_id, lanes.due_at"
            f") SELECT {_M_ROW_COLUMNS} FROM u JOIN messages m ON m.id = u.head_id ORDER BY u.due_at, m.id",
            {
                "now": now,
                "limit": limit,
                "until": now + timedelta(seconds=lease_seconds),
                "worker": _text(worker),
            },
        )
        return [_row(r) for r in recs]

    async def settle(self, row_id: int, settlement: Settlement, now: datetime) -> None:
        s = settlement
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute("SELECT lane FROM messages WHERE id = %s", (row_id,))
            rec = await cur.fetchone()
            if rec is None:
                return
            lane: str = rec[0]
            # Lane first, then the message: the order every writer here follows.
            await conn.execute("SELECT 1 FROM lanes WHERE lane = %s FOR UPDATE", (lane,))
            await conn.execute(
                "UPDATE messages SET state = %s, detail = %s, attempts = attempts + %s, next_due = %s, updated_at = %s, "
                "document_id = CASE WHEN %s <> '' THEN %s ELSE document_id END, "
                "patient_id = CASE WHEN %s <> '' THEN %s ELSE patient_id END WHERE id = %s",
                (
                    s.state.value,
                    _text(s.detail),
                    1 if s.state in (State.DELIVERED, State.RETRY, State.DEAD) else 0,
                    s.next_due,
                    now,
                    _text(s.document_id),
                    _text(s.document_id),
                    _text(s.patient_id),
                    _text(s.patient_id),
                    row_id,
                ),
            )
            await self._insert_events(conn, s.events)
            if s.state in (State.RETRY, State.PARKED):
                await conn.execute(
                    "UPDATE lanes SET due_at = %s, lease_until = NULL, worker = NULL WHERE lane = %s AND head_id = %s",
                    (s.next_due if s.next_due is not None else now, lane, row_id),
                )
            elif s.state is State.DEAD:
                await conn.execute(
                    "UPDATE lanes SET due_at = NULL, lease_until = NULL, worker = NULL WHERE lane = %s AND head_id = %s",
                    (lane, row_id),
                )
            else:  # delivered, refused, rejected: the lane moves on
                await self._advance_lane(conn, lane, now)

    @staticmethod
    async def _advance_lane(conn: Conn, lane: str, now: datetime) -> None:
        cur = await conn.execute(
            f"SELECT id, state, next_due FROM messages WHERE lane = %s AND state IN {_BLOCKING} ORDER BY id LIMIT 1",
            (lane,),
        )
        nxt = await cur.fetchone()
        if nxt is None:
            await conn.execute("DELETE FROM lanes WHERE lane = %s", (lane,))
            return
        due = _lane_due(State(nxt[1]), nxt[2], now)
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
                [_text(e.kind) for e in events],
                [_text(e.detail) for e in events],
                [_text(json.dumps(e.data, sort_keys=True, default=str)) for e in events],
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
            cur = await conn.execute(
                "UPDATE messages SET state = 'accepted', attempts = 0, next_due = %s, deadline = NULL, "
                "updated_at = %s, detail = %s WHERE id = %s AND state IN ('dead', 'refused', 'parked') RETURNING id",
                (now, now, _text(detail), row_id),
            )
            if await cur.fetchone() is None:
                if head is None:
                    await conn.execute("DELETE FROM lanes WHERE lane = %s AND head_id IS NULL", (lane,))
                return False
            await conn.execute(
                "INSERT INTO events (row_id, at, kind, detail) VALUES (%s, %s, 'replay', %s)",
                (row_id, now, _text(detail)),
            )
            if head is None or head >= row_id:
                await conn.execute(
                    "UPDATE lanes SET head_id = %s, due_at = %s, lease_until = NULL, worker = NULL WHERE lane = %s",
                    (row_id, now, lane),
                )
        return True

    async def set_deadline(self, row_id: int, deadline: datetime) -> None:
        await self._exec("UPDATE messages SET deadline = %s WHERE id = %s AND deadline IS NULL", (deadline, row_id))

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, row_id: int) -> Row | None:
        recs = await self._fetchall(f"SELECT {_ROW_COLUMNS} FROM messages WHERE id = %s", (row_id,))
        return _row(recs[0]) if recs else None

    async def find(self, query: Query) -> list[Row]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.states:
            clauses.append("state = ANY(%s::text[])")
            params.append([State(s).value for s in query.states])
        for column, value in (
            ("sender", query.sender),
            ("patient_id", query.patient_id),
            ("document_id", query.document_id),
        ):
            if value:
                clauses.append(f"{column} = %s")
                params.append(_text(value))
        if query.since is not None:
            clauses.append("received_at >= %s")
            params.append(query.since)
        if query.until is not None:
            clauses.append("received_at < %s")
            params.append(query.until)
        if query.before_id is not None:
            clauses.append("id < %s")
            params.append(query.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(max(1, min(query.limit, 1000)))
        recs = await self._fetchall(f"SELECT {_ROW_COLUMNS} FROM messages {where} ORDER BY id DESC LIMIT %s", params)
        return [_row(r) for r in recs]

    async def events(self, row_id: int) -> list[Event]:
        recs = await self._fetchall(
            "SELECT row_id, at, kind, detail, data FROM events WHERE row_id = %s ORDER BY id", (row_id,)
        )
        return [Event(row_id=r[0], at=r[1].astimezone(UTC), kind=r[2], detail=r[3], data=dict(r[4])) for r in recs]

    async def add_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        async with self._conn() as conn:
            await self._insert_events(conn, events)

    async def counts(self) -> dict[State, int]:
        recs = await self._fetchall("SELECT state, COUNT(*) FROM messages GROUP BY state")
        found = {r[0]: int(r[1]) for r in recs}
        return {s: found.get(s.value, 0) for s in State}

    async def oldest_pending(self) -> datetime | None:
        recs = await self._fetchall(
            "SELECT MIN(received_at) FROM messages WHERE state IN ('accepted', 'retry', 'parked')"
        )
        return _utc(recs[0][0]) if recs else None

    # --- registry, series, patient map ------------------------------------------------------------

    async def registry_get(self, ins: str) -> RegistryEntry | None:
        recs = await self._fetchall(
            "SELECT ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row "
            "FROM consent_registry WHERE ins = %s",
            (_text(ins),),
        )
        if not recs:
            return None
        r = recs[0]
        return RegistryEntry(r[0], r[1], r[2], r[3], r[4], _utc(r[5]), int(r[6]))

    async def registry_put(self, entry: RegistryEntry) -> None:
        await self._exec(
            "INSERT INTO consent_registry (ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (ins) DO UPDATE SET ins_oid = excluded.ins_oid, "
            "dmp_status = excluded.dmp_status, feeding = excluded.feeding, consultation = excluded.consultation, "
            "updated_at = excluded.updated_at, source_row = excluded.source_row",
            (
                _text(entry.ins),
                _text(entry.ins_oid),
                _text(entry.dmp_status),
                _text(entry.feeding),
                _text(entry.consultation),
                entry.updated_at or datetime.now(UTC),
                entry.source_row,
            ),
        )

    async def series_get(self, series_key: str) -> SeriesEntry | None:
        recs = await self._fetchall(
            "SELECT series_key, unique_id, set_id, version, row_id FROM document_series WHERE series_key = %s",
            (_text(series_key),),
        )
        return SeriesEntry(*recs[0]) if recs else None

    async def series_put(self, entry: SeriesEntry, now: datetime) -> None:
        await self._exec(
            "INSERT INTO document_series (series_key, unique_id, set_id, version, row_id, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (series_key) DO UPDATE SET unique_id = excluded.unique_id, "
            "set_id = excluded.set_id, version = excluded.version, row_id = excluded.row_id, "
            "updated_at = excluded.updated_at",
            (_text(entry.series_key), _text(entry.unique_id), _text(entry.set_id), entry.version, entry.row_id, now),
        )

    async def patient_map_get(self, sender: str, local_id: str) -> tuple[str, str] | None:
        recs = await self._fetchall(
            "SELECT ins, ins_oid FROM patient_map WHERE sender = %s AND local_id = %s", (_text(sender), _text(local_id))
        )
        return (recs[0][0], recs[0][1]) if recs else None

    async def patient_map_put(self, sender: str, local_id: str, ins: str, ins_oid: str) -> None:
        await self._exec(
            "INSERT INTO patient_map (sender, local_id, ins, ins_oid) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (sender, local_id) DO UPDATE SET ins = excluded.ins, ins_oid = excluded.ins_oid",
            (_text(sender), _text(local_id), _text(ins), _text(ins_oid)),
        )


def _lane_due(state: State, next_due: datetime | None, now: datetime) -> datetime | None:
    """When a lane whose head is in ``state`` becomes claimable (None: it waits for an operator)."""
    if state is State.DEAD:
        return None
    if state is State.ACCEPTED or next_due is None:
        return now
    return next_due
