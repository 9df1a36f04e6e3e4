"""DICOM Storage SCP: KOS manifests and SR reports in over C-STORE, journaled before the success status.

Contract (docs/dicom.md):

* Only the document SOP classes are negotiated: Key Object Selection and the SR family (Basic Text,
  Enhanced, Comprehensive, Comprehensive 3D, Extensible). Images are not documents of the patient
  space; their presentation contexts are rejected at association time (a modality gets "abstract
  syntax not supported"), never acknowledged and silently dropped.
* Each C-STORE goes through the DICOM intake (:class:`~passerelle.connector.intake.dicom.DicomIntake`,
  shared with the watched folder), and its verdict becomes the status through the one reply table
  (:mod:`passerelle.connector.intake.replies`): 0x0000 only after the journal commit; 0xA700 for
  everything a sender should retry (journal unavailable or too slow, dataset over the size limit);
  0xA900, 0xC000, 0xC001, 0xC002 for what retrying cannot fix.
* Verification (C-ECHO) is negotiated too and answered with success, so a PACS administrator's echo
  test passes; the calling AE title is checked at association time, as for C-STORE.
* pynetdicom runs handlers in its own threads: a handler hands the intake to the asyncio loop with
  :func:`asyncio.run_coroutine_threadsafe` and waits for it (bounded by ``store_timeout_s``); decoding
  and the dry-run mapping then run in the loop's worker threads, never on the loop itself.
* The DIMSE services answered are listed in one place, :meth:`DicomScp.services` (add one there).
* Association hygiene and sender binding (:mod:`.dicom_assoc`, ADR 0024): a per-source cap, the
  association idle the longest closed to admit a new one when the table is full, ``network_timeout_s``
  as the idle timeout; with ``bindings``, each calling AE title may associate only from its networks and
  send only datasets whose Issuer of Patient ID (0010,0021) it is bound to (else 0x0124, audited).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator
from pydicom.dataset import Dataset
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt

from passerelle.connector.intake.binding import audit_text, valid_pattern
from passerelle.connector.intake.dicom import DicomIntake, DicomSiteSettings
from passerelle.connector.intake.replies import (
    DICOM_COMMENT_MAX,
    DICOM_SUCCESS,
    Verdict,
    dicom_comment,
    dicom_status,
    unavailable,
)
from passerelle.connector.listeners.dicom_assoc import AssociationTable, Binding, DicomMetrics
from passerelle.connector.listeners.refusals import RefusalFlush
from passerelle.errors import ParseError, QueueUnavailableError, TooLargeError
from passerelle.mappings.dicom.kos import DOCUMENT_SOP_CLASSES
from passerelle.observability.audit import AuditTrail
from passerelle.observability.refusals import RefusalLog, Surface

#: Verification SOP Class (PS3.4 A.4): C-ECHO.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Refused associations in the audit trail (actor ``dicom:<address>``, the reason as the class).
SURFACE = Surface("dicom", action="refusal", outcome="refuse", reason="association-refused")

_Event = evt.NotificationEvent | evt.InterventionEvent
#: pynetdicom's ``evt_handlers``: (event, handler) pairs; handlers run in pynetdicom's threads.
Handlers = list[tuple[_Event, Callable[..., Any]] | tuple[_Event, Callable[..., Any], list[Any]]]


class DicomBindingSettings(BaseModel):
    """One entry of ``dicom.bindings``: where a calling AE title may associate from, and its senders."""

    model_config = ConfigDict(extra="forbid")

    #: Source networks this AE title may call from (e.g. ['10.1.20.15/32']); empty = any address.
    networks: list[IPvAnyNetwork] = Field(default_factory=list)
    #: The Issuers of Patient ID (0010,0021) it may send datasets for; '*' = any (the network check only).
    issuers_of_patient_id: list[str] = Field(min_length=1)

    @field_validator("issuers_of_patient_id")
    @classmethod
    def _issuers(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if not valid_pattern(v, 1)]
        if bad:
            raise ValueError(f"an Issuer of Patient ID is a non-empty value without '^' (or '*'), not {bad[0]!r}")
        return values

    def to_binding(self) -> Binding:
        return Binding(tuple(self.networks), frozenset(self.issuers_of_patient_id))


class DicomSettings(BaseModel):
    """The ``dicom`` group of the settings: the Storage SCP's address, limits and timeouts."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the bound port is :attr:`DicomScp.port`.
    port: int = Field(11112, ge=0, le=65535)
    ae_title: str = "PASSERELLE"
    #: Calling AE titles allowed to associate; empty = any (only on a trusted network segment).
    allowed_calling_ae_titles: list[str] = Field(default_factory=list)
    #: Largest P-DATA PDU we accept (0 = unlimited, not recommended).
    max_pdu_bytes: int = Field(65536, ge=0)
    #: Largest dataset accepted; larger ones get 0xA700 and are not stored. KOS/SR are small.
    max_dataset_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Open associations (connections, from accept). When full, the one idle the longest is closed.
    max_associations: int = Field(10, ge=1, le=1000)
    #: Associations from one source address; one more request is refused ("local limit exceeded").
    max_associations_per_source: int = Field(5, ge=1, le=1000)
    #: Sender binding: calling AE title -> its networks and Issuers of Patient ID. When set, a calling
    #: AE title without an entry is refused. Empty = no binding (see allowed_calling_ae_titles).
    bindings: dict[str, DicomBindingSettings] = Field(default_factory=dict)
    #: Idle timeout: an association silent this long is aborted (pynetdicom's network timeout).
    network_timeout_s: float = Field(60.0, gt=0)
    acse_timeout_s: float = Field(30.0, gt=0)
    dimse_timeout_s: float = Field(30.0, gt=0)
    #: How long a C-STORE waits for the journal commit before answering 0xA700.
    store_timeout_s: float = Field(30.0, gt=0)
    #: Site values of DICOM-born documents (also what the worker and the folder should use).
    site: DicomSiteSettings = Field(default_factory=DicomSiteSettings)

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 16 or "\\" in value or not value.isprintable():
            raise ValueError("AE title must be 1-16 printable characters without backslash")
        return value

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _callers(cls, values: list[str]) -> list[str]:
        out = [v.strip() for v in values]
        if any(not v or len(v) > 16 for v in out):
            raise ValueError("calling AE titles must be 1-16 characters")
        return out

    @field_validator("bindings")
    @classmethod
    def _bound(cls, values: dict[str, DicomBindingSettings]) -> dict[str, DicomBindingSettings]:
        out = {title.strip(): binding for title, binding in values.items()}
        if any(not title or len(title) > 16 for title in out):
            raise ValueError("calling AE titles must be 1-16 characters")
        return out


class DicomScp:
    """pynetdicom Storage SCP bound to an asyncio loop, feeding one :class:`DicomIntake`.

    :meth:`start` and :meth:`stop` are idempotent; :meth:`stop` stops accepting associations, lets
    running handlers finish and closes the socket.
    """

    def __init__(
        self, settings: DicomSettings, intake: DicomIntake, *, metrics: DicomMetrics | None = None,
        audit: AuditTrail | None = None, refusals: RefusalLog | None = None,
    ) -> None:  # fmt: skip
        self.settings, self.intake = settings, intake
        # the gateway's refusal log (its life is the gateway's), else one of our own over ``audit``
        self._own_flush = RefusalFlush(RefusalLog(audit)) if refusals is None and audit is not None else None
        self._refusals = refusals or (self._own_flush.log if self._own_flush is not None else None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self.table = AssociationTable(
            max_per_source=settings.max_associations_per_source,
            bindings={ae: b.to_binding() for ae, b in settings.bindings.items()},
            metrics=metrics,
            audit=self._audit_refusal,
        )

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("DICOM SCP not started")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def services(self) -> Handlers:
        """The DIMSE services this SCP answers, with their handlers."""
        return [(evt.EVT_C_STORE, self._on_c_store), (evt.EVT_C_ECHO, self._on_c_echo)]

    def contexts(self) -> list[str]:
        """The abstract syntaxes negotiated (with the default transfer syntaxes)."""
        return [*sorted(DOCUMENT_SOP_CLASSES), VERIFICATION_SOP_CLASS]

    async def start(self) -> None:
        if self._server is not None:
            return
        # pynetdicom's DEBUG output dumps datasets (PHI); keep its logger at WARNING or above.
        lib_log = logging.getLogger("pynetdicom")
        if lib_log.getEffectiveLevel() < logging.WARNING:
            lib_log.setLevel(logging.WARNING)
        s = self.settings
        ae = self._application_entity()
        self._loop = asyncio.get_running_loop()
        handlers = [*self.services(), *self.table.handlers()]
        self._server = await asyncio.to_thread(ae.start_server, (s.host, s.port), block=False, evt_handlers=handlers)
        if self._own_flush is not None:
            await self._own_flush.start()
        log.info("dicom scp: listening on %s:%d as %s", s.host, self.port, s.ae_title)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # shutdown() joins handler threads, which may be waiting on this loop: never block the loop.
        await asyncio.to_thread(server.shutdown)
        if self._own_flush is not None:
            await self._own_flush.stop()
        log.info("dicom scp: stopped")

    def _application_entity(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_pdu_size = s.max_pdu_bytes
        ae.maximum_associations = s.max_associations
        ae.network_timeout = s.network_timeout_s
        ae.acse_timeout = s.acse_timeout_s
        ae.dimse_timeout = s.dimse_timeout_s
        ae.require_called_aet = True
        if s.allowed_calling_ae_titles:
            ae.require_calling_aet = list(s.allowed_calling_ae_titles)
        for uid in self.contexts():
            ae.add_supported_context(uid, DEFAULT_TRANSFER_SYNTAXES)
        return ae

    # pynetdicom calls the handlers in an association thread.
    def _on_c_echo(self, event: Any) -> int:
        with self.table.busy(event.assoc):
            log.info("dicom scp: C-ECHO from %s", str(event.assoc.requestor.ae_title).strip())
            return 0x0000

    def _on_c_store(self, event: Any) -> Dataset:
        with self.table.busy(event.assoc):
            return self._store(event)

    def _store(self, event: Any) -> Dataset:
        calling = str(event.assoc.requestor.ae_title).strip()
        principal = self.table.principal(event.assoc)
        request = event.request
        declared_size = len(request.DataSet.getvalue()) if request.DataSet is not None else 0
        if declared_size > self.settings.max_dataset_bytes:
            log.warning("dicom scp: dataset of %d bytes from %s refused (limit)", declared_size, calling)
            limit = self.settings.max_dataset_bytes
            return _status(self.intake.refuse(TooLargeError(f"dataset larger than {limit} bytes")))
        try:
            raw = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # noqa: BLE001 - any failure to re-wrap the received bytes is a refusal
            log.warning("dicom scp: undecodable dataset from %s: %s", calling, type(exc).__name__)
            return _status(self.intake.refuse(ParseError("dataset cannot be read")))
        expected = str(request.AffectedSOPClassUID or "")
        try:
            receive = self.intake.receive(raw, sender=calling, expected_sop_class=expected, principal=principal)
            verdict = self._on_loop(receive)
        except (concurrent.futures.TimeoutError, TimeoutError):
            log.error("dicom scp: journal did not answer within %.0fs", self.settings.store_timeout_s)
            verdict = self.intake.refuse(QueueUnavailableError("storage did not answer in time"))
        except Exception as exc:  # noqa: BLE001 - never a success status on a failure path
            log.error("dicom scp: store failed: %s", type(exc).__name__)
            verdict = unavailable(cause=exc)
        return _status(verdict)

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the service's loop from a pynetdicom thread, bounded by store_timeout_s."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise QueueUnavailableError("service stopping")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=self.settings.store_timeout_s)
        except (concurrent.futures.TimeoutError, TimeoutError):
            future.cancel()
            raise

    def _audit_refusal(self, calling: str, host: str, reason: str) -> None:
        """Record a refused association (:data:`~.dicom_assoc.AUDITED`) in the refusal log, coalesced per
        address, reason and minute, the calling AE title (a system's name) in the first record; not awaited."""
        loop, refusals = self._loop, self._refusals
        if refusals is None or loop is None or loop.is_closed():
            return
        note = f"calling AE {audit_text(calling, 16) or '-'}"
        record = refusals.refused(SURFACE, audit_text(host), reason, note=note)
        future = asyncio.run_coroutine_threadsafe(record, loop)
        future.add_done_callback(_log_audit_failure)


def _log_audit_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("dicom scp: audit record of a refused association failed: %s", type(future.exception()).__name__)


def _status(verdict: Verdict) -> Dataset:
    ds = Dataset()
    ds.Status = dicom_status(verdict)
    comment = dicom_comment(verdict)
    if comment and ds.Status != DICOM_SUCCESS:
        ds.ErrorComment = comment[:DICOM_COMMENT_MAX]
    return ds
