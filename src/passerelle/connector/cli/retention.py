"""``passerelle retention run [--dry-run]``: one retention pass by hand (docs/journal.md "Retention")."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer

from passerelle.connector.cli.common import load, print_json, with_audit, with_journal
from passerelle.connector.cli.options import ConfigOpt, DataDirOpt
from passerelle.connector.retention import describe, run_retention
from passerelle.connector.settings import Settings
from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditTrail
from passerelle.queue.audit import AuditStore
from passerelle.queue.ports import Journal
from passerelle.queue.retention import RetentionReport

app = typer.Typer(help="Purge what the retention policy says has been kept long enough.", no_args_is_help=True)


@app.command("run")
def retention_run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what a pass would purge; change nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """One retention pass now (the gateway runs one every retention.interval_s): payloads of settled
    messages after retention.payload_days, of rejected ones after retention.rejected_days, journal rows and
    audit records after retention.record_days. Pending and dead messages are never touched. Audited."""
    settings = load(config, data_dir=data_dir)
    if settings.journal.backend == "sqlite" and not settings.journal_path.exists():
        typer.echo(f"passerelle: no journal at {settings.journal_path} (check --data-dir or --config)", err=True)
        raise typer.Exit(1)
    try:
        report = _Pass(settings, dry_run).run()
    except QueueUnavailableError as exc:
        typer.echo(f"passerelle: retention failed: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        print_json(dataclasses.asdict(report))
    else:
        typer.echo(f"retention{' (dry run, would purge)' if dry_run else ''}: {describe(report)}")


class _Pass:
    """One pass, with a progress bar on stderr when it purges more than one batch."""

    def __init__(self, settings: Settings, dry_run: bool) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.actor = f"cli:{os.environ.get('USER', 'unknown')}"

    def run(self) -> RetentionReport:
        return asyncio.run(with_journal(self.settings, lambda j: with_audit(self.settings, lambda a: self.purge(j, a))))

    async def purge(self, journal: Journal, store: AuditStore) -> RetentionReport:
        now = datetime.now(UTC)
        settings = self.settings.retention
        counts = await run_retention(journal, store, settings, now, trail=None, actor=self.actor, dry_run=True)
        if self.dry_run:
            return counts
        with _progress(counts.total if counts.total > settings.batch_size else 0) as step:
            return await run_retention(
                journal, store, settings, now, trail=AuditTrail(store), actor=self.actor, progress=step
            )


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over ``total`` rows on stderr (None when there is too little to show one)."""
    if not total:
        yield None
        return
    with typer.progressbar(length=total, label="purging", file=sys.stderr) as bar:
        yield bar.update
