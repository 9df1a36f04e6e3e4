"""The real PostgreSQL test server: one throw-away schema per test.

The server is the local one (trust auth, database ``test``); ``PASSERELLE_TEST_PG_DSN`` points elsewhere.
Tests skip with a clear message only when the server cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest
from psycopg import sql

DSN = os.environ.get("PASSERELLE_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")


async def _admin() -> psycopg.AsyncConnection[tuple[object, ...]]:
    try:
        return await psycopg.AsyncConnection.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL test server unreachable at {DSN}: {type(exc).__name__}")


@asynccontextmanager
async def pg_schema() -> AsyncIterator[tuple[str, str]]:
    """Yield ``(dsn, schema)`` for a schema name nobody uses; the schema is dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    admin = await _admin()
    try:
        yield DSN, schema
    finally:
        try:
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        finally:
            await admin.close()


async def admin_connection() -> psycopg.AsyncConnection[tuple[object, ...]]:
    """An autocommit connection for looking at what the journal wrote (caller closes it)."""
    return await _admin()
