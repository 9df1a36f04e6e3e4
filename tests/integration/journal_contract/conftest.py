"""The journal under test: every contract suite of this folder runs against the three backends —
SQLite (a real file in tmp_path), PostgreSQL (the real server, a throw-away schema) and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from passerelle.queue.memory import MemoryJournal
from passerelle.queue.ports import Journal
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.pg import pg_schema


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    if request.param == "postgres":
        from passerelle.queue.postgres import PostgresJournal

        async with pg_schema() as (dsn, schema):
            pj = PostgresJournal(dsn, schema=schema)
            await pj.open()
            yield pj
            await pj.close()
        return
    j: Journal = SQLiteJournal(tmp_path / "journal.sqlite3") if request.param == "sqlite" else MemoryJournal()
    await j.open()
    yield j
    await j.close()
