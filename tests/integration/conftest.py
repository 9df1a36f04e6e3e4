"""Fixtures shared by the integration tests (a module or a folder may define its own of the same name)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from passerelle.queue.sqlite import SQLiteJournal
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import SandboxURL, running_sandbox


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SQLiteJournal]:
    """An open SQLite journal in a real file, ``tmp_path/journal.sqlite3``."""
    j = SQLiteJournal(tmp_path / "journal.sqlite3")
    await j.open()
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxURL]:
    """The sandbox over real HTTP on 127.0.0.1 (free port), its data in ``tmp_path/sandbox``."""
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as url:
        yield url
