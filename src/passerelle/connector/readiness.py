"""What ``/readyz`` answers besides the supervisor's phase (ADR 0023, docs/runbook.md "PasserelleNotReady").

The gateway is not ready, with the reason, when:

* a part is starting or stopping, or a background task died (the supervisor);
* the journal cannot be written (``Lifecycle.check_writable``: for SQLite a file written and synced in
  its directory and the write lock taken; for PostgreSQL a database that accepts writes);
* free disk space under the data directory (and the journal's directory) is below
  ``readiness.min_free_mb``;
* the patient space has answered only configuration errors since its last success (:class:`SpaceHealth`).

:class:`HealthMonitor` runs the journal and disk checks every ``readiness.check_interval_s`` and probes the
space (:class:`~passerelle.adapters.space.SpaceProbe`: its capability statement, or a TD0.2) at start and
every ``readiness.space_probe_interval_s``; ``/readyz`` reads the results, so it answers at once and never
touches the disk or the network itself. Every reason is a PHI-free line meant for an operator.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from passerelle.adapters.space import PatientSpace, SpaceProbe, configuration_error, space_answered
from passerelle.config.settings import ReadinessSettings
from passerelle.connector.periodic import Periodic
from passerelle.errors import PasserelleError, QueueUnavailableError
from passerelle.observability.metrics import Metrics
from passerelle.queue.ports import Lifecycle

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class SpaceHealth:
    """Follows what the patient space's answers say about our configuration of it.

    A configuration-class answer (:func:`~passerelle.adapters.space.configuration_error`) makes the space
    "misconfigured" until it answers again (:func:`~passerelle.adapters.space.space_answered`); timeouts,
    transport errors and 5xx change nothing (the space is down, not misconfigured: the journal keeps the
    documents and the worker retries). Each episode is logged once at ERROR, its end at INFO; each
    configuration-class answer is counted.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.problem = ""

    @property
    def reason(self) -> str:
        if not self.problem:
            return ""
        return f"patient space configuration error since its last success: {self.problem}"

    def observe(self, exc: BaseException | None) -> None:
        """Called with the outcome of every call and probe (``None``: success)."""
        kind = configuration_error(exc)
        if kind is not None:
            self.metrics.space_configuration_errors.labels(kind).inc()
            text = exc.message if isinstance(exc, PasserelleError) else type(exc).__name__
            if not self.problem:
                log.error("patient space configuration error: %s (check space.url and the space credentials)", text,
                          extra={"reason": kind})  # fmt: skip
            self.problem = text
        elif space_answered(exc) and self.problem:
            log.info("patient space answers again", extra={"component": "space"})
            self.problem = ""
        self.metrics.not_ready.labels("space").set(1 if self.problem else 0)


def free_space_problem(paths: Sequence[Path], min_free_mb: int, metrics: Metrics) -> str:
    """Why the free space under ``paths`` is too low ("" when it is not). Blocking (``statvfs``)."""
    smallest: int | None = None
    problem = ""
    for path in paths:
        probe = path
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        smallest = free if smallest is None else min(smallest, free)
        if min_free_mb and free < min_free_mb * MIB and not problem:
            problem = f"free disk space under {path} is {free // MIB} MiB, below readiness.min_free_mb ({min_free_mb})"
    if smallest is not None:
        metrics.disk_free.set(smallest)
    return problem


@dataclass
class HealthMonitor:
    """The part that keeps the readiness checks fresh (module docstring). ``supervisor`` is the
    supervisor's own readiness (its phase, or the task that died); ``paths`` are where free disk space
    is measured."""

    settings: ReadinessSettings
    supervisor: Callable[[], str]
    journal: Lifecycle
    paths: Sequence[Path]
    space: PatientSpace
    space_health: SpaceHealth
    metrics: Metrics
    journal_problem: str = ""
    disk_problem: str = ""

    def __post_init__(self) -> None:
        self._checks = Periodic("readiness-checks", self.check, self.settings.check_interval_s)
        self._probe = Periodic("space-probe", self.probe_space, self.settings.space_probe_interval_s)

    def reasons(self) -> list[str]:
        """Every reason the gateway is not ready now (``[]`` when ready)."""
        found = [self.supervisor(), self.journal_problem, self.disk_problem, self.space_health.reason]
        return [reason for reason in found if reason]

    def readiness(self) -> str:
        """ "" when ready, else the reasons, ``; ``-separated (what ``/readyz`` shows)."""
        return "; ".join(self.reasons())

    def background_tasks(self) -> list[asyncio.Task[None]]:
        return [*self._checks.background_tasks(), *self._probe.background_tasks()]

    async def start(self) -> None:
        """One round of checks now (readiness is true from the first ``/readyz``), then the tasks."""
        await self.check()
        await self._checks.start()
        if self.settings.space_probe and isinstance(self.space, SpaceProbe):
            await self._probe.start()

    async def stop(self) -> None:
        await self._probe.stop()
        await self._checks.stop()

    async def check(self) -> None:
        """One round of the journal and disk checks (never raises: a check that fails is a reason)."""
        try:
            await self.journal.check_writable()
            self.journal_problem = ""
        except QueueUnavailableError as exc:
            self._journal_not_writable(exc.message)
        except Exception as exc:  # noqa: BLE001 - a failing check is a reason to report, not a crash
            self._journal_not_writable(f"the check failed ({type(exc).__name__})")
        try:
            self.disk_problem = await asyncio.to_thread(
                free_space_problem, self.paths, self.settings.min_free_mb, self.metrics
            )
        except OSError as exc:
            self.disk_problem = f"cannot read the free disk space ({exc.strerror})"
        self.metrics.not_ready.labels("journal").set(1 if self.journal_problem else 0)
        self.metrics.not_ready.labels("disk").set(1 if self.disk_problem else 0)
        self.metrics.not_ready.labels("supervisor").set(1 if self.supervisor() else 0)

    def _journal_not_writable(self, why: str) -> None:
        if not self.journal_problem:
            log.error("journal not writable: %s", why, extra={"component": "journal"})
        self.journal_problem = f"journal not writable: {why}"

    async def probe_space(self) -> None:
        """One probe; its outcome reaches :class:`SpaceHealth` through the space client's observer."""
        assert isinstance(self.space, SpaceProbe)
        try:
            summary = await self.space.probe()
        except Exception as exc:  # noqa: BLE001 - classified by SpaceHealth; the probe goes on
            log.info("patient space probe: %s", type(exc).__name__, extra={"reason": getattr(exc, "reason", "")})
            return
        log.info("patient space probe: %s", summary, extra={"component": "space"})
