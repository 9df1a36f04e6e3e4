"""Composition root: builds every component from the settings and owns the start/stop order.

Start: journal → worker → listeners (MLLP, DICOM, folders). Stop, in reverse: stop accepting and drain
the listeners, stop the worker (in-flight rows settle or their lease comes back), close the space
client, close the journal. Everything starts inside the FastAPI lifespan, so one component owns the
signals (uvicorn). A side task that crashes stops the service instead of letting it limp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI

from passerelle.adapters.factory import build_space
from passerelle.adapters.space import PatientSpace
from passerelle.config.loader import read_secret
from passerelle.connector.dispatch.business_ack import BusinessAckNotifier
from passerelle.connector.dispatch.consent_gate import PolicyGate
from passerelle.connector.dispatch.lab import CrBioLabMapper
from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.connector.dispatch.worker import DispatchWorker
from passerelle.connector.intake.cda import CdaIntakeSettings, FolderWatcher, cda_router
from passerelle.connector.intake.hl7 import Hl7Intake
from passerelle.connector.listeners.dicom_folder import DicomFolderWatcher
from passerelle.connector.listeners.dicom_scp import DicomScp
from passerelle.connector.listeners.http_api import build_router
from passerelle.connector.listeners.mllp.handler import MllpHandler
from passerelle.connector.listeners.mllp.server import MllpServer
from passerelle.connector.metrics_bridge import IntakeMetricsBridge, MllpMetricsBridge, refresh_journal_gauges
from passerelle.connector.settings import Settings
from passerelle.observability.audit import AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.queue.audit import AuditStore
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.model import AppendResult, Inbound
from passerelle.queue.ports import Journal
from passerelle.queue.sqlite import SQLiteJournal

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def open_audit_store(settings: Settings, environ: dict[str, str] | None = None) -> AuditStore:
    """The audit store beside the journal (same SQLite file, or same PostgreSQL database)."""
    if settings.journal.backend == "postgres":
        from passerelle.queue.audit_postgres import PostgresAuditStore

        return PostgresAuditStore(_dsn(settings, environ), schema=settings.journal.schema_)
    return SQLiteAuditStore(settings.journal_path)


def _dsn(settings: Settings, environ: dict[str, str] | None) -> str:
    dsn = read_secret(settings.journal.dsn_file, settings.journal.dsn_env, environ or dict(os.environ))
    if not dsn:
        raise ValueError("journal.backend=postgres: the DSN file or environment variable is empty")
    return dsn


def open_journal(settings: Settings, environ: dict[str, str] | None = None) -> Journal:
    """The configured journal backend (not yet opened)."""
    if settings.journal.backend == "postgres":
        from passerelle.queue.postgres import PostgresJournal

        return PostgresJournal(
            _dsn(settings, environ), schema=settings.journal.schema_, max_batch=settings.journal.max_batch
        )
    return SQLiteJournal(settings.journal_path, max_batch=settings.journal.max_batch)


class Listener(Protocol):
    """A side intake (DICOM SCP, watched folders): idempotent start and stop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Gateway:
    """Every long-lived component of one running gateway."""

    settings: Settings
    journal: Journal
    metrics: Metrics
    space: PatientSpace
    worker: DispatchWorker
    intake: Hl7Intake
    mllp: MllpServer | None
    clock: Clock
    listeners: list[Listener] = field(default_factory=list)
    audit_store: AuditStore | None = None
    audit: AuditTrail | None = None
    notifier: BusinessAckNotifier | None = None
    side_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: bool = False
    crashed: str = ""
    on_crash: Callable[[str], None] | None = None
    ports: dict[str, int | None] = field(default_factory=dict)

    async def append(self, items: list[Inbound] | tuple[Inbound, ...] | Any) -> list[AppendResult]:
        """Journal append shared by every listener; wakes the worker once the commit returned."""
        results = await self.journal.append(items)
        self.worker.wake()
        return results

    async def start(self) -> None:
        if self.started:
            return
        await self.journal.open()
        if self.audit_store is not None:
            await self.audit_store.open()
        self.worker.start()
        if self.mllp is not None:
            await self.mllp.start()
        for listener in self.listeners:
            await listener.start()
        self.side_tasks.append(asyncio.create_task(self._gauges(), name="journal-gauges"))
        self.side_tasks.append(asyncio.create_task(self._supervise(), name="supervisor"))
        self.started = True
        dicom = next((x for x in self.listeners if isinstance(x, DicomScp)), None)
        self.write_ports(mllp=self.mllp.port if self.mllp else None, dicom=dicom.port if dicom else None)
        log.info("gateway started", extra={"port": self.mllp.port if self.mllp else 0})

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for listener in reversed(self.listeners):
            await listener.stop()
        if self.mllp is not None:
            await self.mllp.stop()
        await self.worker.stop(timeout=self.settings.worker.lease_s / 4)
        for task in self.side_tasks:
            task.cancel()
        for task in self.side_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.side_tasks.clear()
        if self.notifier is not None:
            await self.notifier.aclose()
        await self.space.aclose()
        if self.audit_store is not None:
            await self.audit_store.close()
        await self.journal.close()
        log.info("gateway stopped")

    @property
    def ready(self) -> bool:
        task = self.worker.task
        return self.started and not self.crashed and task is not None and not task.done()

    async def _gauges(self) -> None:
        while True:
            try:
                await refresh_journal_gauges(self.journal, self.metrics, self.clock())
            except Exception:  # noqa: BLE001 - gauges are best effort; the failure is counted
                self.metrics.worker_errors.labels("gauges").inc()
            await asyncio.sleep(5)

    async def _supervise(self) -> None:
        """A worker that dies stops the service (uvicorn exits non-zero) rather than limping on."""
        while True:
            await asyncio.sleep(1)
            task = self.worker.task
            if task is not None and task.done():
                self.crashed = "dispatch worker stopped unexpectedly"
                log.error(self.crashed)
                if self.on_crash is not None:
                    self.on_crash(self.crashed)
                return

    def write_ports(self, **ports: int | None) -> None:
        """Record bound ports in ``<data_dir>/run/ports.json`` (a configured port 0 is chosen by the OS)."""
        self.ports.update(ports)
        run = self.settings.data_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        tmp = run / "ports.json.tmp"
        tmp.write_text(json.dumps({**self.ports, "pid": os.getpid()}), encoding="utf-8")
        tmp.replace(run / "ports.json")


def build_gateway(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    space: PatientSpace | None = None,
    journal: Journal | None = None,
    metrics: Metrics | None = None,
) -> Gateway:
    metrics = metrics or Metrics()
    journal = journal or open_journal(settings)
    test_env = settings.test_environment
    hl7_settings = settings.hl7.model_copy(update={"test_environment": test_env})
    space = space or build_space(settings.space.model_copy(update={"test_environment": test_env}), metrics)
    mapper = RowMapper(
        journal,
        hl7_settings,
        test_environment=test_env,
        clock=clock,
        oid_root=settings.oid_root,
        dicom_site=settings.dicom.site.to_site(),
        lab_mapper=CrBioLabMapper(
            journal, settings.lab, hl7_settings, oid_root=settings.oid_root, test_environment=test_env
        ),
    )
    gate = PolicyGate(journal, journal, space, settings, metrics=metrics)
    audit_store = open_audit_store(settings)
    audit = AuditTrail(audit_store, clock, transport=settings.space.transport.value)
    notifier = BusinessAckNotifier(journal, settings.business_ack, hl7_settings, metrics, clock)
    worker = DispatchWorker(
        journal, mapper, gate, space, settings.worker, metrics, audit=audit, notifier=notifier, clock=clock
    )
    gateway_ref: dict[str, Gateway] = {}

    async def append(items: Any) -> list[AppendResult]:
        return await gateway_ref["g"].append(items)

    intake = Hl7Intake(append, hl7_settings, metrics=IntakeMetricsBridge(metrics), clock=clock)
    handler = MllpHandler(intake, metrics, clock)
    mllp = (
        MllpServer(settings.mllp, handler, oversize_handler=handler, metrics=MllpMetricsBridge(metrics))
        if settings.mllp.enabled
        else None
    )
    gateway = Gateway(
        settings, journal, metrics, space, worker, intake, mllp, clock, audit_store=audit_store, audit=audit
    )
    gateway_ref["g"] = gateway

    async def lookup(sender: str, local_id: str) -> tuple[str, str] | None:
        return await journal.patient_map_get(sender, local_id) or await journal.patient_map_get("*", local_id)

    if settings.cda.enabled and settings.cda.folder is not None:
        gateway.listeners.append(FolderWatcher(cda_settings(settings), append, clock=clock))
    if settings.dicom.enabled:
        gateway.listeners.append(
            DicomScp(
                settings.dicom,
                append,
                test_environment=test_env,
                patient_lookup=lookup,
                metrics=IntakeMetricsBridge(metrics, channel="dicom"),
                clock=clock,
            )
        )
    if settings.dicom_folder.enabled:
        gateway.listeners.append(
            DicomFolderWatcher(
                settings.dicom_folder, append, test_environment=test_env, patient_lookup=lookup, clock=clock
            )
        )
    return gateway


def cda_settings(settings: Settings) -> CdaIntakeSettings:
    return settings.cda.model_copy(update={"test_environment": settings.test_environment})


def create_app(settings: Settings, *, gateway: Gateway | None = None) -> FastAPI:
    """The HTTP application (admin API, metrics, health, intake routers) with the gateway in its lifespan."""
    gw = gateway or build_gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(title="Passerelle", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.gateway = gw
    app.include_router(build_router(gw))
    if settings.cda.enabled:
        app.include_router(
            cda_router(
                gw.append, cda_settings(settings), clock=gw.clock, metrics=IntakeMetricsBridge(gw.metrics, "http")
            )
        )
    return app


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising SIGTERM/SIGINT after the graceful shutdown: a clean stop exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


async def start_http_server(application: FastAPI, host: str, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Start uvicorn on ``host:port`` (0: any free port) and return once it listens (or failed)."""
    server = _Server(
        uvicorn.Config(
            application, host=host, port=port, log_config=None, access_log=False, lifespan="on", server_header=False
        )
    )
    task = asyncio.create_task(server.serve(), name="http")
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.05)
    return server, task


def bound_port(server: uvicorn.Server) -> int:
    return int(server.servers[0].sockets[0].getsockname()[1])
