"""Retention: one pass that purges what the policy says has been kept long enough (docs/journal.md).

:func:`purge_once` is what the gateway's background task runs every ``retention.interval_s`` and what
``passerelle retention run [--dry-run]`` calls. It reads no clock and no settings (``now`` and the
policy are passed in) and works in batches of ``batch_size`` rows, each one short transaction, yielding
to the event loop between batches so intake goes on meanwhile.

In this order: journal rows settled before ``record_days`` (with their events and dedup keys), then the
payloads of settled rows (``payload_days``), then those of rejected rows (``rejected_days``), then the
audit records (``record_days``, never younger than the audit floor), then the freed space goes back to
the file system (SQLite). Pending and dead rows are never touched.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from passerelle.queue.audit import AuditRetention
from passerelle.queue.model import SETTLED_STATES, State
from passerelle.queue.ports import RetentionJournal

log = logging.getLogger(__name__)

#: Pages given back to the file system after each batch (SQLite pages are 4 KiB): a short step.
RECLAIM_PAGES = 2048


@dataclass(frozen=True)
class RetentionPolicy:
    """How long things are kept, in days (defaults: the settings' ``retention`` group)."""

    payload_days: float = 30
    rejected_days: float = 7
    record_days: float = 400

    def __post_init__(self) -> None:
        if min(self.payload_days, self.rejected_days, self.record_days) <= 0:
            raise ValueError("retention durations must be positive")


@dataclass(frozen=True)
class RetentionReport:
    """What one pass purged (or, with ``dry_run``, would purge). Counts only: nothing identifying."""

    dry_run: bool
    payloads: int = 0  # settled rows whose payload was emptied
    rejected_payloads: int = 0  # rejected rows whose kept bytes were emptied
    records: int = 0  # journal rows deleted, with their events and dedup keys
    audit_records: int = 0
    pages_released: int = 0  # SQLite pages given back to the file system
    batches: int = 0

    @property
    def total(self) -> int:
        return self.payloads + self.rejected_payloads + self.records + self.audit_records


async def purge_once(
    journal: RetentionJournal,
    policy: RetentionPolicy,
    now: datetime,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
    audit: AuditRetention | None = None,
    progress: Callable[[int], None] | None = None,
) -> RetentionReport:
    """One retention pass over the journal (and the audit store, when given). See the module docstring.

    ``progress`` is called after each batch with the number of rows it purged (a progress bar's step).
    May raise :class:`~passerelle.errors.QueueUnavailableError`; what earlier batches purged stays purged.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    records_before = now - timedelta(days=policy.record_days)
    payloads_before = now - timedelta(days=policy.payload_days)
    rejected_before = now - timedelta(days=policy.rejected_days)
    if dry_run:
        return await _count(journal, audit, records_before, payloads_before, rejected_before)
    run = _Run(journal, batch_size, progress)
    records = await run.drain(lambda: journal.delete_records(records_before, batch_size))
    payloads = 0
    for state in SETTLED_STATES:
        payloads += await run.drain(functools.partial(journal.purge_payloads, state, payloads_before, batch_size, now))
    rejected = await run.drain(lambda: journal.purge_payloads(State.REJECTED, rejected_before, batch_size, now))
    audited = await run.drain(lambda: audit.expire(records_before, batch_size)) if audit is not None else 0
    await run.reclaim_all()
    report = RetentionReport(False, payloads, rejected, records, audited, run.released, run.batches)
    if report.total:
        log.info(
            "retention: %d payloads, %d rejected payloads, %d journal rows, %d audit records purged; %d pages released",
            payloads, rejected, records, audited, run.released,
        )  # fmt: skip
    return report


async def _count(
    journal: RetentionJournal,
    audit: AuditRetention | None,
    records_before: datetime,
    payloads_before: datetime,
    rejected_before: datetime,
) -> RetentionReport:
    """A dry run: what a pass would do now. A row old enough to be deleted counts as a record only."""

    async def payloads(state: State, before: datetime) -> int:
        later = await journal.payloads_due(state, before) - await journal.payloads_due(state, records_before)
        return max(0, later)

    settled = 0
    for state in SETTLED_STATES:
        settled += await payloads(state, payloads_before)
    return RetentionReport(
        dry_run=True,
        payloads=settled,
        rejected_payloads=await payloads(State.REJECTED, rejected_before),
        records=await journal.records_due(records_before),
        audit_records=await audit.expirable(records_before) if audit is not None else 0,
    )


class _Run:
    """Batches of one pass: each a short transaction, space given back after each, the loop yielded."""

    def __init__(self, journal: RetentionJournal, batch_size: int, progress: Callable[[int], None] | None) -> None:
        self.journal = journal
        self.batch_size = batch_size
        self.progress = progress
        self.batches = 0
        self.released = 0

    async def drain(self, step: Callable[[], Awaitable[int]]) -> int:
        """Run ``step`` until a batch comes back short; returns the rows it purged in all."""
        total = 0
        while True:
            done = await step()
            if done:
                self.batches += 1
                total += done
                self.released += await self.journal.reclaim_space(RECLAIM_PAGES)
                if self.progress is not None:
                    self.progress(done)
            if done < self.batch_size:
                return total
            await asyncio.sleep(0)  # intake's turn

    async def reclaim_all(self) -> None:
        while released := await self.journal.reclaim_space(RECLAIM_PAGES):
            self.released += released
            await asyncio.sleep(0)
