"""Retention in the running gateway and by hand (docs/journal.md "Retention", ADR 0023).

:func:`run_retention` is one pass of :func:`passerelle.queue.retention.purge_once` with the settings'
policy, counted in the metrics and recorded in the audit trail (action ``admin``, reason ``retention``,
the counts in the detail): what ``passerelle retention run`` calls. :class:`RetentionTask` is the
supervised part that runs it every ``retention.interval_s``, in batches of ``retention.batch_size``
rows, each a short transaction, so intake goes on meanwhile. A pass that meets an unavailable journal is
counted as failed, logged and tried again at the next interval; anything else ends the task (and the
supervisor stops the service: it must not limp).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from passerelle.config.settings import RetentionSettings
from passerelle.connector.periodic import Periodic
from passerelle.errors import QueueUnavailableError
from passerelle.observability.audit import AuditAction, AuditOutcome, AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.queue.audit import AuditRetention
from passerelle.queue.ports import RetentionJournal
from passerelle.queue.retention import RetentionPolicy, RetentionReport, purge_once

log = logging.getLogger(__name__)


def policy_of(settings: RetentionSettings) -> RetentionPolicy:
    return RetentionPolicy(settings.payload_days, settings.rejected_days, settings.record_days)


def describe(report: RetentionReport) -> str:
    """The counts of one pass, PHI-free (the audit record's detail and the CLI's summary)."""
    return (
        f"payloads={report.payloads} rejected_payloads={report.rejected_payloads} records={report.records} "
        f"audit_records={report.audit_records} pages_released={report.pages_released}"
    )


async def run_retention(
    journal: RetentionJournal,
    audit_store: AuditRetention,
    settings: RetentionSettings,
    now: datetime,
    *,
    trail: AuditTrail | None,
    actor: str,
    metrics: Metrics | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RetentionReport:
    """One pass (or, with ``dry_run``, its counts). A real pass is counted and audited; may raise
    :class:`~passerelle.errors.QueueUnavailableError` (what earlier batches purged stays purged)."""
    try:
        report = await purge_once(journal, policy_of(settings), now, batch_size=settings.batch_size,
                                  dry_run=dry_run, audit=audit_store, progress=progress)  # fmt: skip
    except QueueUnavailableError:
        if metrics is not None and not dry_run:
            metrics.retention_runs.labels("failed").inc()
        raise
    if dry_run:
        return report
    if metrics is not None:
        metrics.retention_runs.labels("ok").inc()
        metrics.retention_last_run.set(now.timestamp())
        for what in ("payloads", "rejected_payloads", "records", "audit_records"):
            metrics.retention_purged.labels(what).inc(getattr(report, what))
    if trail is not None:
        await _audit(trail, actor, report)
    return report


async def _audit(trail: AuditTrail, actor: str, report: RetentionReport) -> None:
    try:
        await trail.record(action=AuditAction.ADMIN, outcome=AuditOutcome.SUCCESS, reason="retention",
                           actor=actor, detail=describe(report))  # fmt: skip
    except (QueueUnavailableError, ValueError) as exc:  # the purge is done; its record is best effort
        log.error("retention: audit record not written (%s)", type(exc).__name__)


@dataclass(eq=False)
class RetentionTask(Periodic):
    """The background retention part (module docstring). ``clock`` gives the pass's "now"."""

    settings: RetentionSettings
    journal: RetentionJournal
    audit_store: AuditRetention
    trail: AuditTrail
    metrics: Metrics
    clock: Callable[[], datetime]

    def __post_init__(self) -> None:
        super().__init__("retention", self.run_once, self.settings.interval_s)

    async def run_once(self) -> None:
        try:
            await run_retention(self.journal, self.audit_store, self.settings, self.clock(), trail=self.trail,
                                actor="passerelle", metrics=self.metrics)  # fmt: skip
        except QueueUnavailableError as exc:
            log.warning("retention pass failed, next one in %g s (%s)", self.settings.interval_s, exc.message)
