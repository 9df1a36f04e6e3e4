"""Composition root: builds every part of one gateway from the settings and owns its life (ADR 0017).

Start order (:meth:`Gateway.parts`): journal → audit store → refusal log (its minute flush) → space
client → business-ACK notifier → dispatch worker → listeners (MLLP, DICOM SCP, watched folders, HTTP) →
journal gauges → retention → health monitor (readiness checks, space probe). Stop is the exact reverse:
stop accepting and drain the listeners, stop the worker (in-flight rows settle or their lease comes
back), wait for business ACKs in flight, close the space client, write the refusal counts still open,
close the audit store, the journal. :class:`~passerelle.connector.lifecycle.Supervisor` makes both exception-safe and watches every
background task; :meth:`Gateway.run` owns the signals and stops the service when a task dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from passerelle.adapters.factory import build_space
from passerelle.adapters.space import PatientSpace
from passerelle.connector.dispatch.business_ack import BusinessAckNotifier
from passerelle.connector.dispatch.worker import DispatchWorker, dispatch_window
from passerelle.connector.files import private_dir, write_private
from passerelle.connector.intake.handover import DecodedMessages
from passerelle.connector.lifecycle import Part, Supervisor
from passerelle.connector.listeners.dicom_scp import DicomScp
from passerelle.connector.listeners.folder import FolderWatcher
from passerelle.connector.listeners.http.server import HttpListener
from passerelle.connector.listeners.mllp.server import MllpServer
from passerelle.connector.listeners.refusals import RefusalFlush
from passerelle.connector.metrics_bridge import JournalGauges
from passerelle.connector.parts import (
    Clock,
    ListenerWiring,
    WakingJournal,
    build_gate,
    build_http,
    build_mllp,
    build_row_mapper,
    build_side_listeners,
    hl7_settings,
    open_audit_store,
    open_journal,
    utcnow,
)
from passerelle.connector.readiness import HealthMonitor, SpaceHealth
from passerelle.connector.retention import RetentionTask
from passerelle.connector.settings import Settings
from passerelle.observability.audit import AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.observability.refusals import RefusalLog
from passerelle.queue.audit import AuditStore
from passerelle.queue.ports import Journal

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Every long-lived part of one running gateway."""

    settings: Settings
    journal: Journal
    audit_store: AuditStore
    audit: AuditTrail
    refusals: RefusalFlush
    metrics: Metrics
    space: PatientSpace
    notifier: BusinessAckNotifier
    worker: DispatchWorker
    mllp: MllpServer | None
    dicom: DicomScp | None
    folders: list[FolderWatcher]
    http: HttpListener
    gauges: JournalGauges
    retention: RetentionTask
    monitor: HealthMonitor
    supervisor: Supervisor
    clock: Clock
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def listeners(self) -> list[MllpServer | DicomScp | FolderWatcher | HttpListener]:
        """Every inbound listener, in start order."""
        side = [x for x in (self.mllp, self.dicom) if x is not None]
        return [*side, *self.folders, self.http]

    def parts(self) -> list[Part]:
        """Everything to start, in order (stopped in reverse)."""
        s, j, gauges, worker = self.settings, self.journal, self.gauges, self.worker

        async def start_worker() -> None:
            worker.start()

        def worker_tasks() -> list[asyncio.Task[None]]:
            return [worker.task] if worker.task is not None else []

        return [
            Part("journal", j.open, j.close, j.background_tasks),
            Part("audit store", self.audit_store.open, self.audit_store.close),
            Part("refusal log", self.refusals.start, self.refusals.stop, self.refusals.background_tasks),
            Part("space client", stop=self.space.aclose),
            Part("business acks", stop=self.notifier.aclose),
            Part("dispatch worker", start_worker, lambda: worker.stop(timeout=s.worker.lease_s / 4), worker_tasks),
            *(Part(_name(x), x.start, x.stop, getattr(x, "background_tasks", _none)) for x in self.listeners),
            Part("journal gauges", gauges.start, gauges.stop, gauges.background_tasks),
            Part("retention", self.retention.start, self.retention.stop, self.retention.background_tasks),
            Part("health monitor", self.monitor.start, self.monitor.stop, self.monitor.background_tasks),
        ]

    @property
    def ready(self) -> bool:
        return self.supervisor.running

    async def start(self) -> None:
        """Start every part; on failure everything started is stopped and ``StartupError`` raised.
        The data directory is created first, 0700, when missing."""
        private_dir(self.settings.data_dir)
        await self.supervisor.start(self.parts())
        self.write_ports()

    async def stop(self) -> None:
        """Stop every part, in reverse order. Idempotent."""
        await self.supervisor.stop()

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a dead background task, stop. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            await self.start()
            tune_gc()
            await self.stop_requested.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        return 1 if self.supervisor.failure else 0

    def failed(self, reason: str) -> None:
        """A background task died: counted; :meth:`run` stops the service."""
        self.metrics.worker_errors.labels("supervisor").inc()
        self.stop_requested.set()

    def write_ports(self) -> None:
        """Record bound ports in ``<data_dir>/run/ports.json`` (a configured port 0 is chosen by the OS)."""
        ports: dict[str, object] = {"mllp": self.mllp.port if self.mllp else None, "http": self.http.port}
        ports["dicom"] = self.dicom.port if self.dicom else None
        ports["http_scheme"] = self.http.scheme  # the image's health check speaks HTTPS when told
        run = private_dir(self.settings.data_dir / "run")
        write_private(run / "ports.json", json.dumps({**ports, "pid": os.getpid()}).encode())


def build_gateway(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    space: PatientSpace | None = None,
    journal: Journal | None = None,
    metrics: Metrics | None = None,
) -> Gateway:
    """Every part of a gateway, wired and not started."""
    metrics = metrics or Metrics()
    journal = journal or open_journal(settings)
    audit_store = open_audit_store(settings)
    audit = AuditTrail(audit_store, clock, transport=settings.space.transport.value)
    space_health = SpaceHealth(metrics)
    window, connections = dispatch_window(settings.worker, settings.space.max_connections)
    space = space or build_space(
        settings.space.model_copy(
            update={"test_environment": settings.test_environment, "max_connections": connections}
        ),
        metrics,
        observe=space_health.observe,
    )
    notifier = BusinessAckNotifier(journal, settings.business_ack, hl7_settings(settings), metrics, clock)
    decoded = DecodedMessages()  # the HL7v2 intake's readings, for the worker (ADR 0026)
    mapper, gate = build_row_mapper(settings, journal, clock, decoded), build_gate(settings, journal, space, metrics)
    worker = DispatchWorker(journal, mapper, gate, space, window, metrics, audit=audit, notifier=notifier, clock=clock)
    refusals = RefusalFlush(RefusalLog(audit, clock=lambda: clock().timestamp()))
    wakes = WakingJournal(journal, worker.wake)
    wiring = ListenerWiring(settings, journal, wakes, metrics, audit, clock, refusals.log, decoded)
    supervisor = Supervisor()
    monitor = HealthMonitor(settings.readiness, supervisor=supervisor.readiness, journal=journal,
                            paths=readiness_paths(settings), space=space, space_health=space_health, metrics=metrics)  # fmt: skip
    dicom, folders = build_side_listeners(wiring)
    http = build_http(wiring, audit_store=audit_store, readiness=monitor.readiness, wake=worker.wake)
    mllp = build_mllp(wiring)
    gateway = Gateway(
        settings, journal, audit_store, audit, refusals, metrics, space, notifier, worker, mllp, dicom, folders, http,
        JournalGauges(journal, metrics, clock), RetentionTask(settings.retention, journal, audit_store, audit, metrics,
        clock), monitor, supervisor, clock,
    )  # fmt: skip
    supervisor.on_failure = gateway.failed
    return gateway


def readiness_paths(settings: Settings) -> list[Path]:
    """Where free disk space matters: the data directory, and the SQLite journal's directory."""
    paths = [settings.data_dir]
    if settings.journal.backend == "sqlite" and settings.journal_path.parent != settings.data_dir:
        paths.append(settings.journal_path.parent)
    return paths


#: Young-generation threshold of the cyclic garbage collector while serving (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """A serving process's collector settings (docs/adr/0026-pipelined-dispatch.md): what the start
    built is moved out of the collector's sight for good (``gc.freeze``), and the young generation is
    collected every 50,000 net allocations instead of 700 (almost every object of a document is freed
    by reference counting; the frequent collections cost about a tenth of the dispatch's CPU)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(middle, 50), max(old, 100))


def _none() -> list[asyncio.Task[None]]:
    return []


def _name(listener: object) -> str:
    names = {MllpServer: "mllp listener", DicomScp: "dicom listener", HttpListener: "http listener"}
    if isinstance(listener, FolderWatcher):
        return listener.spec.name
    return names.get(type(listener), type(listener).__name__)
