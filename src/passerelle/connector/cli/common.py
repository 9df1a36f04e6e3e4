"""What every command shares: loading the settings (a configuration error is one
line per problem and exit code 2, never a traceback), and opening the journal or the audit store for the
length of one command. A command that reads the journal never creates one: an SQLite journal that is
not there (a mistyped ``--data-dir``) is an error, unless the command is given ``--init``."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import typer

from passerelle.config import ConfigError
from passerelle.connector.settings import Settings, load_settings
from passerelle.queue.audit import AuditStore
from passerelle.queue.ports import Journal

T = TypeVar("T")


def load(config: Path | None, **overrides: Any) -> Settings:
    """The settings from ``config``, ``PASSERELLE__*`` variables and dotted overrides, or exit 2."""
    try:
        return load_settings(config, environ=os.environ, overrides=overrides)
    except ConfigError as exc:
        for line in exc.errors:
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(2) from exc


class _Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Store)


async def _using(store: S, fn: Callable[[S], Awaitable[T]]) -> T:
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def require_journal(settings: Settings) -> None:
    """Exit 2 with one line when the SQLite journal file does not exist (nothing is created)."""
    path = settings.journal_path
    if settings.journal.backend == "sqlite" and not path.is_file():
        typer.echo(
            f"error: no journal at {path}: check --data-dir or --config (`passerelle run` creates the journal; "
            "--init creates an empty one)",
            err=True,
        )
        raise typer.Exit(2)


async def with_journal(settings: Settings, fn: Callable[[Journal], Awaitable[T]], *, init: bool = False) -> T:
    """Run ``fn`` with the journal open (it must exist unless ``init``)."""
    from passerelle.connector.parts import open_journal

    if not init:
        require_journal(settings)
    return await _using(open_journal(settings), fn)


async def with_audit(settings: Settings, fn: Callable[[AuditStore], Awaitable[T]], *, init: bool = False) -> T:
    """Run ``fn`` with the audit store open (beside a journal that must exist unless ``init``)."""
    from passerelle.connector.parts import open_audit_store

    if not init:
        require_journal(settings)
    return await _using(open_audit_store(settings), fn)


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
