"""What every command shares: the common options, loading the settings (a configuration error is one
line per problem and exit code 2, never a traceback), and opening the journal or the audit store for the
length of one command."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from passerelle.config import ConfigError
from passerelle.connector.settings import Settings, load_settings
from passerelle.queue.audit import AuditStore
from passerelle.queue.ports import Journal

T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file", exists=True, dir_okay=False)
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where the journal and run files live")]


def load(config: Path | None, **overrides: Any) -> Settings:
    """The settings from ``config``, ``PASSERELLE__*`` variables and dotted overrides, or exit 2."""
    try:
        return load_settings(config, environ=os.environ, overrides=overrides)
    except ConfigError as exc:
        for line in exc.errors:
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(2) from exc


async def with_journal(settings: Settings, fn: Callable[[Journal], Awaitable[T]]) -> T:
    from passerelle.connector.parts import open_journal

    journal = open_journal(settings)
    await journal.open()
    try:
        return await fn(journal)
    finally:
        await journal.close()


async def with_audit(settings: Settings, fn: Callable[[AuditStore], Awaitable[T]]) -> T:
    from passerelle.connector.parts import open_audit_store

    store = open_audit_store(settings)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
