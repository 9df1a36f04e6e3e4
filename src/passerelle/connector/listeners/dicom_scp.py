"""DICOM Storage SCP: KOS manifests and SR reports in over C-STORE, journaled before the success status.

Contract (docs/dicom.md):

* Only the document SOP classes are negotiated: Key Object Selection and the SR family (Basic Text,
  Enhanced, Comprehensive, Comprehensive 3D, Extensible). Images are not documents of the patient
  space; their presentation contexts are rejected at association time (a modality gets "abstract
  syntax not supported"), never acknowledged and silently dropped.
* Verification (C-ECHO) is negotiated too and answered with success, so a PACS administrator's echo
  test passes; the calling AE title is checked at association time, as for C-STORE.
* Each C-STORE is decoded and mapped as a dry run (:func:`prepare`). An unusable instance gets a
  failure status with a PHI-free Error Comment and is journaled as ``REJECTED`` (kept for the browser);
  a usable one is journaled as ``ACCEPTED`` with dedup key ``dicom:<SOP Instance UID>``.
* The success status 0x0000 is returned only after ``accept`` returned, i.e. after the journal commit.
  pynetdicom runs handlers in its own threads: the handler hands the append to the asyncio loop with
  :func:`asyncio.run_coroutine_threadsafe` and waits for it (bounded by ``store_timeout_s``).
* Same SOP Instance UID and same bytes again: success (0x0000), nothing new stored. Same SOP Instance
  UID with other bytes: failure 0xC002.

Status table (PS3.4 B.2.3; one place, :func:`status_for`):

=========  ===========================================================================
0x0000     committed (or an identical duplicate)
0xA700     out of resources: dataset larger than ``max_dataset_bytes``, or the journal is
           unavailable / did not answer in time (transient: the sender should retry)
0xA900     dataset does not match the negotiated SOP class
0xC000     cannot understand: not decodable DICOM (truncated, bad file meta, bad values)
0xC001     readable but not publishable: identity not qualified, not a manifest, SR that
           cannot become IMG-CR-IMG (the Error Comment says which)
0xC002     SOP Instance UID already received with different content
=========  ===========================================================================
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.dataset import Dataset
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt

from passerelle.connector.intake.metrics import IntakeMetrics, NullMetrics
from passerelle.errors import (
    DuplicateConflictError,
    IdentityError,
    MappingError,
    ParseError,
    PasserelleError,
    QueueUnavailableError,
    TooLargeError,
    UnsupportedMessageError,
)
from passerelle.mappings.dicom.common import DicomSite, canonical_hash, decode_dicom, text, zero_preamble
from passerelle.mappings.dicom.kos import DOCUMENT_SOP_CLASSES, map_dicom, patient_lane
from passerelle.mappings.document import (
    FACILITY_TYPE_SYSTEM,
    PRACTICE_SETTING_SYSTEM,
    Author,
    Code,
    Provenance,
)
from passerelle.queue.model import AppendResult, Inbound, State

log = logging.getLogger(__name__)
T = TypeVar("T")

Accept = Callable[[Sequence[Inbound]], Awaitable[list[AppendResult]]]
#: ``(sender, local PatientID) -> (matricule INS, OID)`` from the site's identity store, or None.
PatientLookup = Callable[[str, str], Awaitable[tuple[str, str] | None]]


#: Verification SOP Class (PS3.4 A.4): C-ECHO.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_NOT_PUBLISHABLE = 0xC001
STATUS_DUPLICATE_CONFLICT = 0xC002

#: Error Comment (0000,0902) is LO: at most 64 characters.
_COMMENT_MAX = 64


class DicomSiteSettings(BaseModel):
    """What every DICOM-born document says about the site (``dicom.site``); see :class:`DicomSite`.

    SRs are refused (0xC001) until ``organisation_id``, ``facility_type`` and ``practice_setting`` are set:
    the IMG-CR-IMG header cannot be built without them.
    """

    model_config = ConfigDict(extra="forbid")

    #: IdNat_Struct of the structure (``1`` + FINESS, ``3`` + SIRET...), under 1.2.250.1.71.4.2.2.
    organisation_id: str = ""
    organisation_name: str = ""
    #: TRE_R02 SecteurActivite code (e.g. SA01) and its label.
    facility_type: str = ""
    facility_type_display: str = ""
    #: TRE_A01 practice setting (e.g. ETABLISSEMENT, AMBULATOIRE) and its label.
    practice_setting: str = ""
    practice_setting_display: str = ""
    #: Zone of DICOM dates and times that carry no Timezone Offset From UTC.
    timezone: str = "Europe/Paris"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (is the tz database / tzdata installed?)") from exc
        return value

    def to_site(self) -> DicomSite:
        return DicomSite(
            organisation=Author(organisation_id=self.organisation_id, organisation_name=self.organisation_name),
            facility_type=Code(code=self.facility_type, system=FACILITY_TYPE_SYSTEM, display=self.facility_type_display)
            if self.facility_type
            else None,
            practice_setting=Code(
                code=self.practice_setting, system=PRACTICE_SETTING_SYSTEM, display=self.practice_setting_display
            )
            if self.practice_setting
            else None,
            local_tz=ZoneInfo(self.timezone),
        )


class DicomSettings(BaseModel):
    """The ``dicom`` group of the settings (mounted by the lead in ``config/settings.py``)."""

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
    max_associations: int = Field(10, ge=1, le=1000)
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


# --- the pure part: bytes in, Inbound (or a refusal) out -------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What to append, and the status to give if the append succeeds."""

    inbound: Inbound
    status: int
    comment: str = ""


def status_for(exc: BaseException) -> int:
    """The one table from the exception tree to C-STORE statuses."""
    if isinstance(exc, TooLargeError | QueueUnavailableError | TimeoutError):
        return STATUS_OUT_OF_RESOURCES
    if isinstance(exc, DuplicateConflictError):
        return STATUS_DUPLICATE_CONFLICT
    if isinstance(exc, ParseError):
        return STATUS_CANNOT_UNDERSTAND
    if isinstance(exc, MappingError | IdentityError | UnsupportedMessageError):
        return STATUS_NOT_PUBLISHABLE
    if isinstance(exc, PasserelleError):
        return STATUS_NOT_PUBLISHABLE
    return STATUS_OUT_OF_RESOURCES


def error_comment(exc: BaseException) -> str:
    """PHI-free Error Comment: our exception texts never carry patient data; cut to 64 chars."""
    message = exc.message if isinstance(exc, PasserelleError) else "internal error"
    return message.encode("ascii", "replace").decode("ascii")[:_COMMENT_MAX]


def prepare(
    raw: bytes,
    *,
    channel: str,
    sender: str,
    now: datetime,
    test_environment: bool,
    patient_id_map: Mapping[str, tuple[str, str]] | None,
    site: DicomSite,
    max_bytes: int,
    expected_sop_class: str = "",
    size: int | None = None,
) -> Prepared:
    """Check one Part 10 file the way delivery will (decode + dry-run mapping) and build its row.

    Refused instances become ``REJECTED`` rows (no dedup key; raw kept unless too large). ``size``
    is the real size when the caller did not read an oversized file (``raw`` is then empty).
    """
    digest = hashlib.sha256(raw).hexdigest()
    sop_uid = ""
    try:
        if (len(raw) if size is None else size) > max_bytes:
            raise TooLargeError(f"dataset larger than {max_bytes} bytes")
        ds = decode_dicom(raw)
        digest = canonical_hash(ds)
        sop_uid = text(ds, "SOPInstanceUID")
        sop_class = text(ds, "SOPClassUID")
        if expected_sop_class and sop_class != expected_sop_class:
            return _rejected(
                raw,
                channel,
                sender,
                sop_uid,
                digest,
                STATUS_SOP_CLASS_MISMATCH,
                "dataset SOP class differs from request",
            )
        if sop_class not in DOCUMENT_SOP_CLASSES:
            raise UnsupportedMessageError(f"SOP class {sop_class} is not a document")
        doc = map_dicom(
            raw,
            now=now,
            test_environment=test_environment,
            patient_id_map=patient_id_map,
            provenance=Provenance(channel=channel, sender=sender, message_id=sop_uid),
            site=site,
        )
    except PasserelleError as exc:
        return _rejected(
            b"" if isinstance(exc, TooLargeError) else raw,
            channel,
            sender,
            sop_uid,
            digest,
            status_for(exc),
            error_comment(exc),
            reason=exc.reason,
        )
    inbound = Inbound(
        raw=zero_preamble(raw),
        channel=channel,
        sender=sender,
        kind="dicom",
        message_id=doc.provenance.message_id,
        dedup_key=f"dicom:{doc.provenance.message_id}",
        content_hash=digest,
        lane=patient_lane(doc.patient),
        state=State.ACCEPTED,
        ack=b"",
    )
    return Prepared(inbound, STATUS_SUCCESS)


def _rejected(
    raw: bytes,
    channel: str,
    sender: str,
    sop_uid: str,
    digest: str,
    status: int,
    comment: str,
    *,
    reason: str = "mapping",
) -> Prepared:
    inbound = Inbound(
        raw=raw,
        channel=channel,
        sender=sender,
        kind="dicom",
        message_id=sop_uid,
        dedup_key="",
        content_hash=digest,
        state=State.REJECTED,
        detail=f"{reason}: 0x{status:04X} {comment}"[:500],
        ack=b"",
    )
    return Prepared(inbound, status, comment)


def outcome(prepared: Prepared, result: AppendResult) -> tuple[int, str]:
    """Final status once the row was appended."""
    if result.conflict:
        return STATUS_DUPLICATE_CONFLICT, "SOP Instance UID already received with other content"
    return prepared.status, prepared.comment


def record(metrics: IntakeMetrics, prepared: Prepared, result: AppendResult | None) -> None:
    """One metrics event per instance: accepted, duplicate, conflict, rejected or storage_error."""
    if result is None:
        metrics.message("dicom", "storage_error", "queue_unavailable")
    elif result.conflict:
        metrics.message("dicom", "conflict", "duplicate_conflict")
    elif result.duplicate:
        metrics.message("dicom", "duplicate", "")
    elif prepared.inbound.state is State.ACCEPTED:
        metrics.message("dicom", "accepted", "")
    else:
        metrics.message("dicom", "rejected", prepared.inbound.detail.split(":", 1)[0])


# --- the network shell -----------------------------------------------------------------------------


class DicomScp:
    """pynetdicom Storage SCP bound to an asyncio loop.

    ``accept`` appends rows durably (the journal's ``append``); ``patient_lookup`` (optional) resolves a
    local PatientID to an INS for the dry-run mapping (the lead wires the journal's patient map).
    :meth:`start` and :meth:`stop` are idempotent; :meth:`stop` stops accepting associations, lets
    running handlers finish and closes the socket.
    """

    def __init__(
        self,
        settings: DicomSettings,
        accept: Accept,
        *,
        test_environment: bool,
        site: DicomSite | None = None,
        patient_lookup: PatientLookup | None = None,
        metrics: IntakeMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._accept = accept
        self._metrics: IntakeMetrics = metrics or NullMetrics()
        self._test_environment = test_environment
        self._site = site or settings.site.to_site()
        self._lookup = patient_lookup
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("DICOM SCP not started")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        # pynetdicom's DEBUG output dumps datasets (PHI); keep its logger at WARNING or above.
        lib_log = logging.getLogger("pynetdicom")
        if lib_log.getEffectiveLevel() < logging.WARNING:
            lib_log.setLevel(logging.WARNING)

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
        for uid in sorted(DOCUMENT_SOP_CLASSES):
            ae.add_supported_context(uid, DEFAULT_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION_SOP_CLASS, DEFAULT_TRANSFER_SYNTAXES)
        self._loop = asyncio.get_running_loop()
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_c_store), (evt.EVT_C_ECHO, self._on_c_echo)]
        self._server = await asyncio.to_thread(ae.start_server, (s.host, s.port), block=False, evt_handlers=handlers)
        log.info("dicom scp: listening on %s:%d as %s", s.host, self.port, s.ae_title)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # shutdown() joins handler threads, which may be waiting on this loop: never block the loop.
        await asyncio.to_thread(server.shutdown)
        log.info("dicom scp: stopped")

    # pynetdicom calls the handlers in an association thread.
    def _on_c_echo(self, event: Any) -> int:
        log.info("dicom scp: C-ECHO from %s", str(event.assoc.requestor.ae_title).strip())
        return STATUS_SUCCESS

    def _on_c_store(self, event: Any) -> Dataset:
        calling = str(event.assoc.requestor.ae_title).strip()
        request = event.request
        declared_size = len(request.DataSet.getvalue()) if request.DataSet is not None else 0
        if declared_size > self.settings.max_dataset_bytes:
            log.warning("dicom scp: dataset of %d bytes from %s refused (limit)", declared_size, calling)
            return _status(STATUS_OUT_OF_RESOURCES, f"dataset larger than {self.settings.max_dataset_bytes} bytes")
        try:
            raw = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # noqa: BLE001 - any failure to re-wrap the received bytes is a refusal
            log.warning("dicom scp: undecodable dataset from %s: %s", calling, type(exc).__name__)
            return _status(STATUS_CANNOT_UNDERSTAND, "dataset cannot be read")
        expected = str(request.AffectedSOPClassUID or "")
        try:
            # decoding and the dry-run mapping run here, in pynetdicom's thread; only the identity
            # lookup and the append go to the event loop
            local_id = local_patient_id(raw) if self._lookup is not None else ""
            mapping = self._on_loop(self._patient_map(local_id, calling)) if local_id else None
            prepared = prepare(
                raw,
                channel="dicom",
                sender=calling,
                now=self._clock(),
                test_environment=self._test_environment,
                patient_id_map=mapping,
                site=self._site,
                max_bytes=self.settings.max_dataset_bytes,
                expected_sop_class=expected,
            )
            status, comment, row_id = self._on_loop(self._append(prepared))
        except (concurrent.futures.TimeoutError, TimeoutError):
            log.error("dicom scp: journal did not answer within %.0fs", self.settings.store_timeout_s)
            return _status(STATUS_OUT_OF_RESOURCES, "storage did not answer in time")
        except Exception as exc:  # noqa: BLE001 - never a success status on a failure path
            log.error("dicom scp: store failed: %s", type(exc).__name__)
            return _status(STATUS_OUT_OF_RESOURCES, "storage unavailable")
        log.info(
            "dicom scp: SOP instance %s from %s -> row %s status 0x%04X",
            request.AffectedSOPInstanceUID,
            calling,
            row_id,
            status,
        )
        return _status(status, comment)

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

    async def _append(self, prepared: Prepared) -> tuple[int, str, int | None]:
        try:
            results = await self._accept([prepared.inbound])
            if len(results) != 1:
                raise QueueUnavailableError("journal returned an unexpected number of results")
        except Exception as exc:  # noqa: BLE001 - any storage failure becomes 0xA700, never success
            log.error("dicom scp: journal append failed: %s", type(exc).__name__)
            record(self._metrics, prepared, None)
            return STATUS_OUT_OF_RESOURCES, "storage unavailable, retry later", None
        record(self._metrics, prepared, results[0])
        status, comment = outcome(prepared, results[0])
        return status, comment, results[0].row_id

    async def _patient_map(self, local_id: str, calling: str) -> dict[str, tuple[str, str]] | None:
        if self._lookup is None:
            return None
        found = await self._lookup(calling, local_id)
        return {local_id: found} if found is not None else None


def local_patient_id(raw: bytes) -> str:
    """PatientID of a Part 10 file, '' when unreadable (the dry run then refuses it anyway)."""
    try:
        return text(decode_dicom(raw), "PatientID")
    except ParseError:
        return ""


def _status(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment and status != STATUS_SUCCESS:
        ds.ErrorComment = comment[:_COMMENT_MAX]
    return ds
