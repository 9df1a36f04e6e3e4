"""Factories the composition root (:mod:`passerelle.connector.app`) and the CLI share: the journal and
audit backends, the one row mapper, the intakes and the listeners built from the settings.

Each factory takes what it needs and returns one part, not started. Nothing here starts, stops or
keeps state: that is :class:`~passerelle.connector.app.Gateway`'s job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Depends

from passerelle.adapters.dmp.credentials import load_signing_identity
from passerelle.adapters.mhd import SpaceTransport
from passerelle.adapters.space import PatientSpace
from passerelle.config.loader import read_secret
from passerelle.connector.admin.certificates import CertificateSource, certificate_statuses, from_file
from passerelle.connector.admin.documents import ReadOnlyReferences, Rendered, Renderer, as_rendered
from passerelle.connector.dispatch.consent_gate import PolicyGate
from passerelle.connector.dispatch.lab import CrBioLabMapper
from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.connector.intake.cda import CdaIntake
from passerelle.connector.intake.dicom import DicomIntake, PatientLookup
from passerelle.connector.intake.handover import DecodedMessages
from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
from passerelle.connector.listeners.dicom_scp import DicomScp
from passerelle.connector.listeners.exposure import guard, http_exposure, mllp_exposure
from passerelle.connector.listeners.folder import FolderWatcher, cda_folder, dicom_folder
from passerelle.connector.listeners.http.app import build_app
from passerelle.connector.listeners.http.auth import build_authenticator, refusal_recorder
from passerelle.connector.listeners.http.browser import BrowserApi
from passerelle.connector.listeners.http.console import (
    ConsoleRefusal,
    ConsoleSources,
    SpaceInfo,
    body_page,
    console_router,
    refusal_handler,
)
from passerelle.connector.listeners.http.console.base import AuditReader
from passerelle.connector.listeners.http.documents import DocumentsApi
from passerelle.connector.listeners.http.health import HealthApi
from passerelle.connector.listeners.http.server import HttpListener
from passerelle.connector.listeners.http.sessions import SessionStore
from passerelle.connector.listeners.mllp.handler import MllpHandler
from passerelle.connector.listeners.mllp.server import MllpServer
from passerelle.connector.metrics_bridge import DicomMetricsBridge, IntakeMetricsBridge, MllpMetricsBridge
from passerelle.connector.settings import Settings
from passerelle.observability.audit import AuditTrail
from passerelle.observability.metrics import Metrics
from passerelle.observability.refusals import RefusalLog
from passerelle.queue.audit import AuditStore
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from passerelle.queue.model import AppendResult, Inbound, Row
from passerelle.queue.ports import IntakeJournal, Journal, ReferenceStore
from passerelle.queue.sqlite import SQLiteJournal

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- stores -------------------------------------------------------------------------------------------


def _dsn(settings: Settings, environ: Mapping[str, str] | None) -> str:
    dsn = read_secret(settings.journal.dsn_file, settings.journal.dsn_env, dict(environ or os.environ))
    if not dsn:
        raise ValueError("journal.backend=postgres: the DSN file or environment variable is empty")
    return dsn


def open_journal(settings: Settings, environ: Mapping[str, str] | None = None) -> Journal:
    """The configured journal backend (not yet opened)."""
    if settings.journal.backend == "postgres":
        from passerelle.queue.postgres import PostgresJournal

        dsn = _dsn(settings, environ)
        return PostgresJournal(dsn, schema=settings.journal.schema_, max_batch=settings.journal.max_batch)
    return SQLiteJournal(settings.journal_path, max_batch=settings.journal.max_batch)


def open_audit_store(settings: Settings, environ: Mapping[str, str] | None = None) -> AuditStore:
    """The audit store beside the journal (same SQLite file, or same PostgreSQL database)."""
    if settings.journal.backend == "postgres":
        from passerelle.queue.audit_postgres import PostgresAuditStore

        return PostgresAuditStore(_dsn(settings, environ), schema=settings.journal.schema_)
    return SQLiteAuditStore(settings.journal_path)


# --- dispatch -----------------------------------------------------------------------------------------


def hl7_settings(settings: Settings) -> Hl7IntakeSettings:
    return settings.hl7.model_copy(update={"test_environment": settings.test_environment})


def build_row_mapper(
    settings: Settings, journal: ReferenceStore, clock: Clock, decoded: DecodedMessages | None = None
) -> RowMapper:
    """THE row mapper: the worker's (with ``decoded``, the HL7v2 intake's hand-over), and the CLI's
    replay preview's."""
    hl7, test_env = hl7_settings(settings), settings.test_environment
    lab = CrBioLabMapper(journal, settings.lab, hl7, oid_root=settings.oid_root, test_environment=test_env)
    return RowMapper(
        journal,
        hl7,
        test_environment=test_env,
        clock=clock,
        oid_root=settings.oid_root,
        dicom_site=settings.dicom.site.to_site(),
        lab_mapper=lab,
        cda_limits=settings.cda.limits,
        decoded=decoded,
    )


def build_gate(settings: Settings, journal: Journal, space: PatientSpace, metrics: Metrics) -> PolicyGate:
    return PolicyGate(journal, journal, space, settings, metrics=metrics)


# --- intake -------------------------------------------------------------------------------------------


class WakingJournal:
    """The intakes' journal append: wakes the dispatch worker once the commit returned."""

    def __init__(self, journal: IntakeJournal, wake: Callable[[], None]) -> None:
        self._journal = journal
        self._wake = wake

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        results = await self._journal.append(items)
        self._wake()
        return results


@dataclass(frozen=True, slots=True)
class ListenerWiring:
    """What every inbound listener is built from: the settings, the journal (``journal`` for reads and the
    reference tables, ``intake`` for the intakes' appends, which wake the worker), metrics, audit, clock,
    and the refusal log every listener records its refused peers in (coalesced, ADR 0030)."""

    settings: Settings
    journal: Journal
    intake: IntakeJournal
    metrics: Metrics
    audit: AuditTrail
    clock: Clock
    refusals: RefusalLog
    #: where the HL7v2 intake leaves the messages it decoded for the worker (None: not handed over)
    decoded: DecodedMessages | None = None


def build_mllp(wiring: ListenerWiring) -> MllpServer | None:
    settings, metrics = wiring.settings, wiring.metrics
    if not settings.mllp.enabled:
        return None
    guard(mllp_exposure(settings))
    hl7 = hl7_settings(settings)
    intake = Hl7Intake(
        wiring.intake.append,
        hl7,
        metrics=IntakeMetricsBridge(metrics),
        clock=wiring.clock,
        audit=wiring.audit,
        lab_sender=lambda sender: settings.lab.site_for(sender) is not None,
        handover=wiring.decoded,
    )
    handler = MllpHandler(intake, metrics)
    bridge = MllpMetricsBridge(metrics)
    return MllpServer(settings.mllp, handler, oversize_handler=handler, metrics=bridge, refusals=wiring.refusals)


def patient_lookup(store: ReferenceStore) -> PatientLookup:
    """The site's local patient id -> INS map, per sender then for every sender (``*``)."""

    async def lookup(sender: str, local_id: str) -> tuple[str, str] | None:
        return await store.patient_map_get(sender, local_id) or await store.patient_map_get("*", local_id)

    return lookup


def dicom_intake(wiring: ListenerWiring, *, folder: bool, audit: AuditTrail | None = None) -> DicomIntake:
    settings, channel = wiring.settings, "folder" if folder else "dicom"
    return DicomIntake(
        wiring.intake.append,
        channel=channel,
        test_environment=settings.test_environment,
        site=settings.dicom.site.to_site(),
        max_bytes=settings.dicom_folder.max_file_bytes if folder else settings.dicom.max_dataset_bytes,
        sender=settings.dicom_folder.sender if folder else "",
        patient_lookup=patient_lookup(wiring.journal),
        metrics=IntakeMetricsBridge(wiring.metrics, channel),
        clock=wiring.clock,
        audit=audit,
    )


def cda_intake(wiring: ListenerWiring, *, folder: bool) -> CdaIntake:
    settings = wiring.settings
    cda = settings.cda.model_copy(update={"test_environment": settings.test_environment})
    channel, sender = ("folder", cda.folder_sender) if folder else ("http", cda.sender)
    metrics = IntakeMetricsBridge(wiring.metrics, channel)
    return CdaIntake(wiring.intake.append, cda, channel=channel, sender=sender, metrics=metrics, clock=wiring.clock)


def build_side_listeners(wiring: ListenerWiring) -> tuple[DicomScp | None, list[FolderWatcher]]:
    """The DICOM SCP and the watched folders the settings enable."""
    settings, audit = wiring.settings, wiring.audit
    scp = None
    if settings.dicom.enabled:
        scp_intake = dicom_intake(wiring, folder=False, audit=audit)
        metrics = DicomMetricsBridge(wiring.metrics)
        scp = DicomScp(settings.dicom, scp_intake, metrics=metrics, refusals=wiring.refusals)
    folders = []
    if settings.cda.enabled and settings.cda.folder is not None:
        intake = cda_intake(wiring, folder=True)
        folders.append(FolderWatcher(cda_folder(settings.cda), intake, audit=audit))
    if settings.dicom_folder.enabled:
        intake_d = dicom_intake(wiring, folder=True)
        folders.append(FolderWatcher(dicom_folder(settings.dicom_folder), intake_d, audit=audit))
    return scp, folders


def build_http(
    wiring: ListenerWiring, *, audit_store: AuditReader, readiness: Callable[[], str], wake: Callable[[], None]
) -> HttpListener:
    """The HTTP listener: health, metrics, the browser API, the console and (when enabled) CDA intake, every
    route but the health checks behind the identities of ``http.tokens`` (ADR 0025); plain HTTP on the
    network only when allowed (:func:`~passerelle.connector.listeners.exposure.guard`)."""
    settings, metrics = wiring.settings, wiring.metrics
    journal, audit, clock = wiring.journal, wiring.audit, wiring.clock
    guard(http_exposure(settings))
    http = settings.http
    recorder = refusal_recorder(metrics.http_auth_refusal, wiring.refusals)
    auth = build_authenticator(http, recorder, clock=lambda: clock().timestamp())
    console = ConsoleSources(
        journal=journal,
        audit_store=audit_store,
        auth=auth,
        sessions=SessionStore(http.session_idle_s, http.session_max_s),
        readiness=readiness,
        space=SpaceInfo(settings.space.url, settings.space.transport.value),
        certificates=lambda: certificate_statuses(certificate_sources(settings)),
        wake=wake,
        clock=clock,
        audit=audit,
        render=document_renderer(settings, journal, clock),
        timezone=http.console_timezone,
    )
    routers = [
        HealthApi(readiness, metrics.registry, auth if http.metrics_auth else None).router(),
        BrowserApi(journal, wake, clock, auth, audit).router(),
        console_router(console),
    ]
    own_bodies = {}
    if settings.cda.enabled:
        documents = DocumentsApi(cda_intake(wiring, folder=False), auth)
        routers.append(documents.router())
        own_bodies["/v1/documents"] = documents.own_body()
    app = build_app(
        routers,
        {ConsoleRefusal: refusal_handler},
        api_docs=http.api_docs,
        docs_dependencies=[Depends(auth.read)],
        own_bodies=own_bodies,
        body_page=body_page(console),
        body_timeout_s=http.body_timeout_s,
        count_body=metrics.http_body_refusal,
    )
    return HttpListener(app, http.host, http.port, http.tls)


def document_renderer(settings: Settings, journal: ReferenceStore, clock: Clock) -> Renderer:
    """The documents a row makes, by THE row mapper over a read-only view of the reference tables."""

    async def render(row: Row) -> Rendered:
        mapper = build_row_mapper(settings, ReadOnlyReferences(journal, row.id), clock)
        return as_rendered(await mapper.map(row))

    return render


def certificate_sources(settings: Settings) -> list[CertificateSource]:
    """The certificates the settings configure, by setting path (the console's overview shows their expiry)."""
    sources: list[CertificateSource] = []
    tls, space = settings.mllp.tls, settings.space
    if settings.http.tls is not None:
        sources.append(from_file("http.tls.cert_file", settings.http.tls.cert_file))
    if settings.mllp.enabled and tls.enabled and tls.cert_file is not None:
        sources.append(from_file("mllp.tls.cert_file", tls.cert_file))
    if space.client_cert_file is not None:
        sources.append(from_file("space.client_cert_file", space.client_cert_file))
    if space.transport is SpaceTransport.DMP and space.dmp.sign_cert_file is not None:
        sources.append(("space.dmp.sign_cert_file", lambda: load_signing_identity(space).certificate))
    return sources
