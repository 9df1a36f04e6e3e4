"""DICOM intake, shared by the Storage SCP and the watched folder (docs/dicom.md, ADR 0011).

Contract:

* Each Part 10 instance is decoded and mapped as a dry run (:func:`prepare`), in a worker thread. An
  unusable instance is journaled as ``REJECTED`` (kept for the browser; without its bytes when too
  large) and gets a failure verdict with a PHI-free reason; a usable one is journaled as ``ACCEPTED``
  with dedup key ``dicom:<SOP Instance UID>``.
* A positive verdict (accepted, or the same SOP Instance UID with the same dataset: duplicate) only
  after ``accept`` returned, i.e. after the journal commit. Same SOP Instance UID with other bytes:
  conflict. A journal (or identity lookup) failure is ``unavailable``: nothing stored, the sender
  retries (DICOM 0xA700, the file stays in the folder).
* Every verdict is counted once, here (``kind="dicom"``). The DICOM statuses are the one reply
  table's (:mod:`.replies`).
* Sender binding (ADR 0024): with a :class:`~.binding.Principal` (a calling AE title bound by
  ``dicom.bindings``), the sender an instance names is its Issuer of Patient ID (0010,0021), "" when
  absent; one the principal may not use is refused (0x0124) before the dry run, journaled ``REJECTED``
  without a key, audited and counted. The dedup key stays the SOP Instance UID alone: it is globally
  unique by construction (PS3.5 §9), so the same UID from two senders is the same instance forwarded
  (a duplicate) or a conflict to refuse, never two documents.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from passerelle.config.settings import ZoneName
from passerelle.connector.intake.binding import Principal, audit_refusal
from passerelle.connector.intake.ports import Accept, Clock, IntakeMetrics, NullMetrics, utcnow
from passerelle.connector.intake.replies import (
    DICOM_SUCCESS,
    Outcome,
    Verdict,
    answer_for,
    dicom_comment,
    dicom_status,
    internal_error,
    refused,
    unavailable,
)
from passerelle.errors import (
    DuplicateConflictError,
    ParseError,
    PasserelleError,
    SenderNotAllowedError,
    TooLargeError,
    UnsupportedMessageError,
)
from passerelle.mappings.dicom.common import DicomSite, canonical_hash, decode_dicom, text, zero_preamble
from passerelle.mappings.dicom.kos import DOCUMENT_SOP_CLASSES, map_dicom, patient_lane
from passerelle.mappings.document import FACILITY_TYPE_SYSTEM, PRACTICE_SETTING_SYSTEM, Author, Code, Provenance
from passerelle.observability.audit import AuditTrail
from passerelle.queue.model import Inbound, State

log = logging.getLogger(__name__)

#: ``(sender, local PatientID) -> (matricule INS, OID)`` from the site's identity store, or None.
PatientLookup = Callable[[str, str], Awaitable[tuple[str, str] | None]]


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
    timezone: ZoneName = "Europe/Paris"

    def to_site(self) -> DicomSite:
        return DicomSite(
            organisation=Author(organisation_id=self.organisation_id, organisation_name=self.organisation_name),
            facility_type=_code(self.facility_type, FACILITY_TYPE_SYSTEM, self.facility_type_display),
            practice_setting=_code(self.practice_setting, PRACTICE_SETTING_SYSTEM, self.practice_setting_display),
            local_tz=ZoneInfo(self.timezone),
        )


def _code(code: str, system: str, display: str) -> Code | None:
    return Code(code=code, system=system, display=display) if code else None


class DicomFolderSettings(BaseModel):
    """The ``dicom_folder`` group of the settings: a watched folder of ``*.dcm`` files."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: Path = Path("var/dicom-in")
    #: Defaults: ``<path>/processed`` and ``<path>/failed``.
    processed_dir: Path | None = None
    failed_dir: Path | None = None
    poll_interval_s: float = Field(2.0, gt=0)
    #: A file must be unchanged across two scans and at least this old (seconds) to be taken.
    settle_s: float = Field(2.0, ge=0)
    max_file_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Sender name journaled for files of this folder.
    sender: str = "folder"


# --- the pure part: bytes in, a row to append (and why it is refused) out ------------------------------


@dataclass(frozen=True)
class Prepared:
    """What to append, and why the instance is refused (``None``: usable)."""

    inbound: Inbound
    error: PasserelleError | None = None

    @property
    def status(self) -> int:
        """The C-STORE status this instance gets if the append succeeds."""
        return DICOM_SUCCESS if self.error is None else answer_for(self.error).dicom

    @property
    def comment(self) -> str:
        return "" if self.error is None else dicom_comment(refused(self.error))


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
    principal: Principal | None = None,
) -> Prepared:
    """Check one Part 10 file the way delivery will (decode + dry-run mapping) and build its row.

    Refused instances become ``REJECTED`` rows (no dedup key; raw kept unless too large). ``size``
    is the real size when the caller did not read an oversized file (``raw`` is then empty).
    ``principal``: the bound calling AE title; its Issuers of Patient ID are checked first.
    """
    digest = hashlib.sha256(raw).hexdigest()
    sop_uid = ""
    try:
        if (len(raw) if size is None else size) > max_bytes:
            raise TooLargeError(f"dataset larger than {max_bytes} bytes")
        ds = decode_dicom(raw)
        digest = canonical_hash(ds)
        sop_uid = text(ds, "SOPInstanceUID")
        issuer = text(ds, "IssuerOfPatientID")
        if principal is not None and not principal.allows(issuer):
            message = "Issuer of Patient ID not allowed for this AE title"
            raise SenderNotAllowedError(message, location="0010,0021", claimed=issuer)
        sop_class = text(ds, "SOPClassUID")
        if expected_sop_class and sop_class != expected_sop_class:
            raise UnsupportedMessageError("dataset SOP class differs from request", reason="sop_class_mismatch")
        if sop_class not in DOCUMENT_SOP_CLASSES:
            raise UnsupportedMessageError(f"SOP class {sop_class} is not a document")
        provenance = Provenance(channel=channel, sender=sender, message_id=sop_uid)
        doc = map_dicom(
            raw,
            now=now,
            test_environment=test_environment,
            patient_id_map=patient_id_map,
            provenance=provenance,
            site=site,
        )
    except PasserelleError as exc:
        return _rejected(b"" if isinstance(exc, TooLargeError) else raw, channel, sender, sop_uid, digest, exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not cost the listener
        log.error("dicom intake: unexpected %s while reading a dataset", type(exc).__name__)
        return _rejected(raw, channel, sender, sop_uid, digest, internal_error("dataset"))
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
    return Prepared(inbound)


def _rejected(raw: bytes, channel: str, sender: str, sop_uid: str, digest: str, error: PasserelleError) -> Prepared:
    status = answer_for(error).dicom
    inbound = Inbound(
        raw=raw,
        channel=channel,
        sender=sender,
        kind="dicom",
        message_id=sop_uid,
        dedup_key="",
        content_hash=digest,
        state=State.REJECTED,
        detail=f"{error.reason}: 0x{status:04X} {dicom_comment(refused(error))}"[:500],
        ack=b"",
    )
    return Prepared(inbound, error)


def local_patient_id(raw: bytes) -> str:
    """PatientID of a Part 10 file, '' when unreadable (the dry run then refuses it anyway)."""
    try:
        return text(decode_dicom(raw), "PatientID")
    except ParseError:
        return ""


# --- the intake ------------------------------------------------------------------------------------------


@dataclass
class DicomIntake:
    """Decode, dry-run map and journal DICOM instances for one channel (``dicom`` or ``folder``).

    ``patient_lookup`` (optional) resolves a local PatientID to an INS for the dry-run mapping (the
    composition root wires the journal's patient map). ``sender`` is the default sender (the folder's).
    """

    kind: ClassVar[str] = "dicom"

    accept: Accept
    channel: str
    test_environment: bool
    site: DicomSite
    max_bytes: int
    sender: str = ""
    patient_lookup: PatientLookup | None = None
    metrics: IntakeMetrics = field(default_factory=NullMetrics)
    clock: Clock = utcnow
    audit: AuditTrail | None = None

    async def receive(
        self,
        raw: bytes,
        *,
        size: int | None = None,
        sender: str | None = None,
        expected_sop_class: str = "",
        principal: Principal | None = None,
    ) -> Verdict:
        """One instance: decoded off the event loop, journaled, counted. Never raises for bad input.

        ``principal``: the listener's bound party (calling AE title and its Issuers of Patient ID);
        ``None`` binds nothing."""
        who = self.sender if sender is None else sender
        try:
            mapping = await self._patient_map(raw, who)
        except Exception as exc:  # noqa: BLE001 - the identity store is the journal: same rule as its append
            log.error("dicom intake: patient lookup failed: %s", type(exc).__name__)
            return self._count(unavailable(cause=exc))
        prepared = await asyncio.to_thread(self._prepare, raw, who, size, expected_sop_class, mapping, principal)
        verdict = await self._journal(prepared)
        error = prepared.error
        if principal is not None and isinstance(error, SenderNotAllowedError) and verdict.row_id:
            uid, row = verdict.message_id, verdict.row_id
            log.warning("dicom intake: row %d refused: issuer not bound to %s", row, principal.name)
            await audit_refusal(
                self.audit, principal, channel=self.channel, row_id=row, message_id=uid, claimed=error.claimed
            )
        return self._count(verdict)

    def _prepare(
        self,
        raw: bytes,
        sender: str,
        size: int | None,
        sop_class: str,
        mapping: dict[str, tuple[str, str]] | None,
        principal: Principal | None = None,
    ) -> Prepared:
        return prepare(raw, channel=self.channel, sender=sender, now=self.clock(), patient_id_map=mapping,
                       test_environment=self.test_environment, site=self.site, max_bytes=self.max_bytes,
                       expected_sop_class=sop_class, size=size, principal=principal)  # fmt: skip

    def refuse(self, error: PasserelleError) -> Verdict:
        """An instance refused before decoding (by the listener: too large, unreadable); counted."""
        return self._count(refused(error))

    def status(self, verdict: Verdict) -> str:
        """The verdict's C-STORE status, as written in a folder's ``.reason.txt`` files."""
        return f"0x{dicom_status(verdict):04X}"

    async def _journal(self, prepared: Prepared) -> Verdict:
        uid = prepared.inbound.message_id
        try:
            results = await self.accept([prepared.inbound])
            if len(results) != 1:
                raise ValueError("journal returned an unexpected number of results")
        except Exception as exc:  # noqa: BLE001 - any storage failure is "send again later", never success
            log.error("dicom intake: journal append failed: %s", type(exc).__name__)
            return unavailable(uid, cause=exc)
        result = results[0]
        if result.conflict:
            conflict = DuplicateConflictError("SOP Instance UID already received with other content")
            return refused(conflict, row_id=result.row_id, message_id=uid)
        if result.duplicate:
            return Verdict(Outcome.DUPLICATE, result.row_id, uid)
        if prepared.error is not None:
            return refused(prepared.error, row_id=result.row_id, message_id=uid)
        return Verdict(Outcome.ACCEPTED, result.row_id, uid)

    def _count(self, verdict: Verdict) -> Verdict:
        self.metrics.message(self.kind, verdict.outcome, verdict.reason)
        log.info(
            "dicom intake: SOP instance %s (%s) -> row %s %s",
            verdict.message_id or "-",
            self.channel,
            verdict.row_id,
            f"0x{dicom_status(verdict):04X}",
        )
        return verdict

    async def _patient_map(self, raw: bytes, sender: str) -> dict[str, tuple[str, str]] | None:
        if self.patient_lookup is None or not raw:
            return None
        local_id = await asyncio.to_thread(local_patient_id, raw)
        if not local_id:
            return None
        found = await self.patient_lookup(sender, local_id)
        return {local_id: found} if found is not None else None
