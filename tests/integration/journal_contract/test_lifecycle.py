"""Lifecycle contract (open, close, background tasks) and what the SQLite file promises: durability,
private files whatever the umask, a one-time conversion of older files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from passerelle.errors import QueueUnavailableError
from passerelle.queue import Journal, State, migrations
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.sqlite import SQLiteJournal
from tests.integration.journal_contract.support import item
from tests.integration.test_audit_store_contract import rec
from tests.support.pg import pg_schema


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def unopened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    if request.param == "postgres":
        from passerelle.queue.postgres import PostgresJournal

        async with pg_schema() as (dsn, schema):
            j: Journal = PostgresJournal(dsn, schema=schema)
            yield j
            await j.close()
        return
    j = SQLiteJournal(tmp_path / "journal.sqlite3") if request.param == "sqlite" else MemoryJournal()
    yield j
    await j.close()


async def test_open_and_close_are_idempotent_and_tasks_run_while_open(unopened: Journal) -> None:
    j = unopened
    await j.open()
    await j.open()
    [res] = await j.append([item(1)])
    tasks = j.background_tasks()
    assert all(not t.done() for t in tasks)
    await j.close()
    await j.close()
    assert all(t.done() for t in tasks)
    await j.open()  # a closed journal opens again with what it had
    assert (await j.get(res.row_id)) is not None or isinstance(j, MemoryJournal)
    await j.close()


async def test_sqlite_is_durable_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    j = SQLiteJournal(path)
    await j.open()
    [res] = await j.append([item(1)])
    assert j.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert j.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await j.close()
    # An independent connection (another process would see the same) finds the committed row.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state FROM messages WHERE id = ?", (res.row_id,)).fetchone() == ("accepted",)
    j2 = SQLiteJournal(path)
    await j2.open()  # migrations are not re-applied
    assert (await j2.get(res.row_id)) is not None
    await j2.close()


async def test_sqlite_storage_failure_raises_queue_unavailable(tmp_path: Path) -> None:
    j = SQLiteJournal(tmp_path / "j.sqlite3")
    await j.open()
    j.conn.execute("CREATE TRIGGER fail BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(QueueUnavailableError):
        await j.append([item(1)])
    await j.close()


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
async def test_sqlite_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Issue 11 item 7: the data directory the journal creates is 0700; the journal and audit files and
    their -wal and -shm files are 0600."""
    data = tmp_path / "data" / "gateway"
    journal_path, audit_path = data / "journal.sqlite3", tmp_path / "elsewhere" / "audit.sqlite3"
    previous = os.umask(umask)
    try:
        journal, audit, separate = (
            SQLiteJournal(journal_path),
            SQLiteAuditStore(journal_path),
            SQLiteAuditStore(audit_path),
        )
        for store in (journal, audit, separate):
            await store.open()
        await journal.append([item(1)])
        await audit.append([rec(0)])
        await separate.append([rec(0)])
        files = [Path(f"{p}{suffix}") for p in (journal_path, audit_path) for suffix in ("", "-wal", "-shm")]
        assert all(f.exists() for f in files)  # WAL mode: both side files are there while open
        assert {str(f): _mode(f) for f in files} == {str(f): 0o600 for f in files}
        for directory in (data, data.parent, audit_path.parent):
            assert _mode(directory) == 0o700, directory
        for store in (journal, audit, separate):
            await store.close()
    finally:
        os.umask(previous)


async def test_sqlite_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    for suffix in ("", "-wal"):
        Path(f"{path}{suffix}").touch(mode=0o644)
        os.chmod(f"{path}{suffix}", 0o644)  # as an older version left them
    j = SQLiteJournal(path)
    await j.open()
    await j.append([item(1)])
    assert (_mode(path), _mode(f"{path}-wal"), _mode(f"{path}-shm")) == (0o600, 0o600, 0o600)
    await j.close()


def _old_file(path: Path, add: Callable[[sqlite3.Connection], None], upto: int = 1) -> None:
    """A journal file as the previous release made it: migration 1 only (by default), no auto-vacuum."""
    from passerelle.queue._sqlite_db import statements

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.create_function("sha256_hex", 1, lambda b: hashlib.sha256(b).hexdigest())
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")
    for version, name, sql in migrations.load("sqlite")[:upto]:
        for statement in statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    add(conn)
    conn.close()


async def test_an_older_sqlite_file_is_migrated_and_converted_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    junk, good = bytes(range(256)) * 400, b"MSH|^~\\&|LAB|FAC|||||ORU^R01|1|P|2.5\r"

    def add(conn: sqlite3.Connection) -> None:
        for row_id, state, raw, key in ((1, "rejected", junk, "LAB^FAC^9"), (2, "delivered", good, "LAB^FAC^1")):
            conn.execute(
                "INSERT INTO messages (id, received_at, updated_at, channel, sender, kind, dedup_key, lane, state, raw)"
                " VALUES (?, 0, 0, 'mllp', 'LAB^FAC', 'oru', ?, ?, ?, ?)",
                (row_id, key, f"row:{row_id}", state, raw),
            )

    _old_file(path, add)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    j = SQLiteJournal(path)
    await j.open()
    assert j.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, after one VACUUM
    assert [r[0] for r in j.conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2, 3, 4]
    rejected, delivered = await j.get(1), await j.get(2)
    assert rejected is not None and delivered is not None
    assert (rejected.size, rejected.sha256, len(rejected.raw)) == (len(junk), hashlib.sha256(junk).hexdigest(), 65536)
    assert rejected.raw == junk[:65536] and rejected.dedup_key == "" and rejected.truncated
    assert (delivered.raw, delivered.size, delivered.sha256) == (good, len(good), hashlib.sha256(good).hexdigest())
    assert delivered.state is State.DELIVERED and delivered.dedup_key == "LAB^FAC^1"
    await j.close()


async def test_conversion_waits_when_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _old_file(path, lambda conn: None, upto=len(migrations.load("sqlite")))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        j = SQLiteJournal(path, busy_timeout_ms=50)
        await j.open()  # works without the conversion
        assert j.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    finally:
        writer.close()
    await j.append([item(1)])
    await j.close()
    j = SQLiteJournal(path)
    await j.open()  # the next open converts
    assert j.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert (await j.counts())[State.ACCEPTED] == 1
    await j.close()


async def test_concurrent_closing_waits_for_pending_appends(tmp_path: Path) -> None:
    j = SQLiteJournal(tmp_path / "j.sqlite3")
    await j.open()
    appends = [asyncio.create_task(j.append([item(n, f"p{n}")])) for n in range(50)]
    await asyncio.sleep(0)
    await j.close()
    assert all(len(t.result()) == 1 for t in appends)


async def test_an_open_journal_answers_it_can_be_written(unopened: Journal) -> None:
    await unopened.open()
    await unopened.check_writable()
    await unopened.append([item(1)])
    await unopened.check_writable()


async def test_sqlite_is_not_writable_when_its_directory_is_gone_and_is_again_once_back(tmp_path: Path) -> None:
    """The open file keeps working after its directory is moved away, but nothing new can be created
    where the journal lives (its WAL after a checkpoint, the audit store, a restart): /readyz says so."""
    home = tmp_path / "data"
    j = SQLiteJournal(home / "journal.sqlite3")
    await j.open()
    try:
        home.rename(tmp_path / "moved")
        with pytest.raises(QueueUnavailableError, match=r"cannot write in the journal's directory \(No such file"):
            await j.check_writable()
        (tmp_path / "moved").rename(home)
        await j.check_writable()
        assert [p.name for p in home.iterdir() if "probe" in p.name] == []  # the probe file is removed
    finally:
        await j.close()


async def test_only_the_dispatching_process_gives_claims_back(tmp_path: Path) -> None:
    """SQLite serves one dispatching process: the holder of ``<journal>.dispatch`` (an flock, released
    by the kernel when its process dies). Another process opening the file releases nobody's claims."""
    from tests.integration.journal_contract.support import later

    path = tmp_path / "journal.sqlite3"
    first, second = SQLiteJournal(path), SQLiteJournal(path)  # two open file descriptions: two "processes"
    await first.open()
    await second.open()
    try:
        [res] = await first.append([item(1)])
        await first.heartbeat("first", later(0), 10)
        assert len(await first.claim("first", 10, 3600, later(0))) == 1
        assert await second.heartbeat("second", later(60), 10) == 0  # the first one holds the lock
        assert await second.claim("second", 10, 3600, later(60)) == []
        await first.close()  # its process ends: the lock is free, its claims belong to nobody alive
        assert await second.heartbeat("second", later(61), 10) == 1
        assert [c.id for c in await second.claim("second", 10, 3600, later(61))] == [res.row_id]
        assert stat.S_IMODE(os.stat(f"{path}.dispatch").st_mode) == 0o600
    finally:
        await first.close()
        await second.close()
