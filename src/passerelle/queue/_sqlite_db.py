"""The SQLite file the journal and the audit store share: where it lives, who may read it, how it is opened.

* **Modes**: the directories created for it are 0700, the file 0600 whatever the process umask; SQLite
  gives its ``-wal`` and ``-shm`` files the database file's mode. Existing files are tightened to 0600.
* **Durability**: WAL with ``synchronous=FULL``, checked (a file that cannot guarantee an fsync'd
  commit is refused).
* **Space**: incremental auto-vacuum (a file created before it is converted once by a ``VACUUM`` at
  open), so pages freed by the retention purge go back to the file system with :func:`reclaim`; the WAL
  is truncated to :data:`WAL_SIZE_LIMIT` after a checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from passerelle.errors import QueueUnavailableError

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
WAL_SIZE_LIMIT = 16 * 1024 * 1024
_AUTO_VACUUM_INCREMENTAL = 2
_SYNCHRONOUS_FULL = 2


def prepare(path: Path) -> None:
    """Create the missing parent directories (0700) and the file (0600); tighten existing files."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile by another process: theirs
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        _tighten(path, lambda: os.fchmod(fd, FILE_MODE), os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    for side in (f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            _tighten(Path(side), functools.partial(os.chmod, side, FILE_MODE), os.stat(side).st_mode)


#: Name of the small file :func:`probe_directory` writes and removes.
PROBE_NAME = ".passerelle-write-probe"


def probe_directory(directory: Path) -> None:
    """Create, write, fsync and remove a small file in ``directory``; raises ``OSError`` when it cannot."""
    path = directory / PROBE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, b"passerelle write probe\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _tighten(path: Path, chmod: Callable[[], None], mode: int) -> None:
    if stat.S_IMODE(mode) == FILE_MODE:
        return
    try:
        chmod()
    except PermissionError:  # a file another account owns: its mode is that account's business
        log.warning("journal file %s is not 0600 and cannot be changed by this account", path.name)


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """An autocommit connection (any thread) on ``path``, durable and in incremental auto-vacuum mode."""
    prepare(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Before the first table exists this is all a new file needs; an older file is converted later.
        conn.execute(f"PRAGMA auto_vacuum = {_AUTO_VACUUM_INCREMENTAL}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = FULL")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if str(mode).lower() != "wal" or int(sync) != _SYNCHRONOUS_FULL:
            raise QueueUnavailableError(f"journal durability not guaranteed (journal_mode={mode}, synchronous={sync})")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.create_function("sha256_hex", 1, _sha256_hex, deterministic=True)  # for migrations
    except BaseException:
        conn.close()
        raise
    return conn


def _sha256_hex(value: bytes | None) -> str:
    return "" if value is None else hashlib.sha256(value).hexdigest()


def convert_to_incremental_vacuum(conn: sqlite3.Connection) -> None:
    """Once per file made before incremental auto-vacuum: rewrite it (``VACUUM``) in that mode.

    Needs no other connection reading the file at that moment; when one is (another process), the
    conversion waits for the next open and the journal works as before meanwhile.
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _AUTO_VACUUM_INCREMENTAL:
        return
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:
        log.warning("journal file not converted to incremental vacuum yet (%s)", exc.sqlite_errorname)
        return
    log.info("journal file converted to incremental auto-vacuum")


def reclaim(conn: sqlite3.Connection, max_pages: int) -> int:
    """Give up to ``max_pages`` free pages back to the file system; returns how many were released."""
    before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if before == 0 or max_pages <= 0:
        return 0
    # executescript steps the pragma to its end (one execute() step releases a single page).
    conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
    return before - int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def statements(sql: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (``BEGIN … END;``) whole."""
    out: list[str] = []
    current = ""
    for line in sql.strip().splitlines():
        if not current.strip() and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError("incomplete SQL statement in a migration")
    return out


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[tuple[int, str, str]],
    done: set[int],
    record: Callable[[sqlite3.Connection, int, str], Any],
) -> None:
    """Apply each migration not in ``done``, in its own write transaction, then ``record`` it there."""
    for version, name, sql in migrations:
        if version in done:
            continue
        with write_transaction(conn):
            for statement in statements(sql):
                conn.execute(statement)
            record(conn, version, name)
        log.info("migration applied", extra={"migration": name})


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock now, not at the first write) … ``COMMIT``, or ``ROLLBACK`` on error.

    ``durable=False`` commits without the fsync (``synchronous=NORMAL`` for this one transaction): a
    crash may lose it, never corrupt the file, and the next durable commit makes it durable too (the
    WAL is synced as a whole). Only for writes whose loss is harmless (a dispatch claim).
    """
    if not durable:
        conn.execute("PRAGMA synchronous = NORMAL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if not durable:
            conn.execute("PRAGMA synchronous = FULL")


class DispatchLock:
    """An exclusive ``flock`` on ``<journal>.dispatch`` held by the one process dispatching from a
    SQLite journal: the kernel releases it when that process dies, even by SIGKILL, so its holder
    knows every claim not made by its own workers belongs to a process that is gone."""

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".dispatch")
        self._fd: int | None = None
        self._warned = False

    def acquire(self) -> bool:
        """Take the lock if free (never waits); True while this process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if not self._warned:
                self._warned = True
                log.warning("another process dispatches from this journal file: its claims are left alone")
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
