"""What the PostgreSQL journal and audit store share: error wrapping, storable text, a small connection
pool and the migration runner (under an advisory lock, so instances starting together apply once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from passerelle.errors import QueueUnavailableError

log = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[TupleRow]


def text(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates; SQLite does. Keep the row, not the byte."""
    if value.isascii() and "\x00" not in value:
        return value
    value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def wrap(exc: BaseException) -> QueueUnavailableError:
    """Our error for a database failure: its class and SQLSTATE only (server messages can quote values)."""
    state = getattr(exc, "sqlstate", None)
    suffix = f" ({state})" if state else ""
    return QueueUnavailableError(f"journal error: {type(exc).__name__}{suffix}")


async def close_quietly(conn: Conn) -> None:
    try:
        await conn.close()
    except (psycopg.Error, OSError):
        log.debug("journal connection close failed", exc_info=True)


class Pool:
    """A few autocommit connections, opened on demand with ``connect``, at most ``size`` at once."""

    def __init__(self, connect: Callable[[], Awaitable[Conn]], size: int) -> None:
        self._connect = connect
        self._idle: list[Conn] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self._closed:
            raise QueueUnavailableError("journal is not open")
        await self._slots.acquire()
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
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
            await close_quietly(conn)
            return
        status = conn.info.transaction_status
        if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            try:
                await conn.rollback()
            except psycopg.Error:
                await close_quietly(conn)
                return
        elif status is not TransactionStatus.IDLE:  # ACTIVE after a cancellation, or UNKNOWN
            await close_quietly(conn)
            return
        self._idle.append(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await close_quietly(conn)


async def migrate(
    conn: Conn,
    schema: str,
    versions: str,
    lock: tuple[str, tuple[object, ...]],
    migrations: Sequence[tuple[int, str, str]],
    *,
    named: bool,
) -> None:
    """Apply the migrations not yet recorded in ``<schema>.<versions>``, in one transaction.

    ``lock`` is the advisory-lock statement and its parameters: instances starting together take it in
    turn, so one applies and the others find the work done. The schema is created when missing. The
    versions table records ``version``, ``applied_at`` and, when ``named``, the migration's ``name``.
    """
    ident, table = sql.Identifier(schema), sql.Identifier(versions)
    name_column = ", name TEXT NOT NULL" if named else ""
    record = "INSERT INTO {}.{} (version, applied_at, name) VALUES (%s, %s, %s)"
    if not named:
        record = "INSERT INTO {}.{} (version, applied_at) VALUES (%s, %s)"
    async with conn.transaction():
        await conn.execute(lock[0], lock[1])
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (version INTEGER PRIMARY KEY"
                + name_column
                + ", applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            ).format(ident, table)
        )
        cur = await conn.execute(sql.SQL("SELECT version FROM {}.{}").format(ident, table))
        done = {r[0] for r in await cur.fetchall()}
        for version, name, statements in migrations:
            if version in done:
                continue
            await conn.execute(statements.encode())
            params = (version, datetime.now(UTC), name) if named else (version, datetime.now(UTC))
            await conn.execute(sql.SQL(record).format(ident, table), params)
            log.info("migration applied", extra={"migration": name})
