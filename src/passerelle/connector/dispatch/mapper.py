"""Row → document: picks the mapping for a journal row's kind and feeds it what it needs from the journal.

The mappings are pure; this module does the lookups they need (previous version of a lab order or an
imaging study, local patient-id → INS map) and the local consent registry update for PAM ADT feeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime
from typing import Protocol

from passerelle.connector.dispatch.worker import Handled
from passerelle.connector.intake.handover import DecodedMessages
from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.errors import MappingError, UnsupportedMessageError
from passerelle.mappings.cda import reader as cda
from passerelle.mappings.cda.safe_xml import DEFAULT_LIMITS, CdaLimits
from passerelle.mappings.dicom import kos as dicom
from passerelle.mappings.document import Document, Provenance
from passerelle.mappings.hl7v2 import documents as oru
from passerelle.mappings.hl7v2.header import read_header
from passerelle.mappings.hl7v2.volet import MessageKind, classify
from passerelle.queue.model import RegistryEntry, Row, SeriesEntry
from passerelle.queue.ports import ReferenceStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(eq=False)
class RowMapper:
    """Implements the worker's ``Mapper`` port for every inbound kind."""

    journal: ReferenceStore
    hl7: Hl7IntakeSettings
    _: KW_ONLY
    test_environment: bool
    clock: Clock
    oid_root: str
    lab_mapper: LabMapper | None = None
    dicom_site: dicom.DicomSite | None = None
    #: the CDA intake's limits (``cda.max_bytes`` …): what the door accepted, the worker parses too
    cda_limits: CdaLimits = DEFAULT_LIMITS
    #: the HL7v2 intake's decoded messages of this process (None: every row is decoded from the journal)
    decoded: DecodedMessages | None = None

    async def map(self, row: Row) -> Document | list[Document] | Handled:
        now = self.clock()
        prov = Provenance(channel=row.channel, sender=row.sender, message_id=row.message_id, journal_id=row.id)
        if row.kind in ("oru", "mdm"):
            return self._document_message(row, prov, now)
        if row.kind == "adt":
            return await self._consent_feed(row)
        if row.kind == "lab":
            if self.lab_mapper is None:
                raise MappingError("discrete lab results cannot be mapped: CR-BIO generation unavailable", reason="lab")
            return await self.lab_mapper.map(row, prov, now)
        if row.kind == "cda":
            return cda.map_cda_document(
                row.raw, test_environment=self.test_environment, now=now, provenance=prov, limits=self.cda_limits
            )
        if row.kind == "dicom":
            return await self._dicom(row, prov, now)
        raise UnsupportedMessageError(f"journal kind {row.kind!r} has no mapping", reason="unsupported")

    def _document_message(self, row: Row, prov: Provenance, now: datetime) -> Document | list[Document]:
        """An ORU/MDM row's documents, from intake's reading of the same bytes when it was handed over."""
        options = self.hl7.options_for_sender(row.sender)
        decoded = None
        if self.decoded is not None:
            decoded = self.decoded.take(row.id, row.raw, options, self.test_environment)
        if decoded is None:
            msg, read = options.decode(row.raw), None
        else:
            msg, read = decoded.message, (decoded.header, decoded.classified)
        docs = oru.map_hl7_message(msg, test_environment=self.test_environment, now=now, provenance=prov, read=read)
        return docs[0] if len(docs) == 1 else docs

    async def _consent_feed(self, row: Row) -> Handled:
        msg = self.hl7.decode(row.raw, row.sender)
        classified = classify(
            msg,
            read_header(msg),
            test_environment=self.test_environment,
            check_documents=False,
            accept_adt_without_zfa=True,
        )
        feed = classified.consent
        if classified.kind is not MessageKind.ADT_CONSENT:
            raise UnsupportedMessageError("ADT without consent information", reason="unsupported")
        if feed is None:
            return Handled("ADT without ZFA: no consent information to record")
        if not feed.ins:
            raise MappingError("consent feed without a qualified INS: not recorded", reason="identity_not_qualified")
        await self.journal.registry_put(
            RegistryEntry(
                ins=feed.ins,
                ins_oid=feed.ins_oid,
                dmp_status=feed.dmp_status,
                feeding=feed.feeding,
                consultation=feed.consultation,
                updated_at=self.clock(),
                source_row=row.id,
            )
        )
        return Handled(
            f"consent registry updated: DMP {feed.dmp_status or '-'}, feeding {feed.feeding or '-'}", feed.ins
        )

    async def _dicom(self, row: Row, prov: Provenance, now: datetime) -> Document:
        ds = dicom.decode_dicom(row.raw)
        local_id = str(getattr(ds, "PatientID", "") or "")
        mapping: dict[str, tuple[str, str]] = {}
        if local_id:
            found = await self.journal.patient_map_get(row.sender, local_id) or await self.journal.patient_map_get(
                "*", local_id
            )
            if found is not None:
                mapping[local_id] = found
        previous = None
        key = dicom.series_key(ds)
        if key:
            prev = await self.journal.series_get(key)
            if prev is not None:
                previous = dicom.PreviousManifest(unique_id=prev.unique_id, set_id=prev.set_id, version=prev.version)
        doc = dicom.map_dicom(
            row.raw,
            now=now,
            test_environment=self.test_environment,
            patient_id_map=mapping,
            provenance=prov,
            previous=previous,
            site=self.dicom_site,
        )
        if key and (previous is None or previous.unique_id != doc.unique_id):
            await self.journal.series_put(
                SeriesEntry(key, doc.unique_id, doc.set_id or doc.unique_id, doc.version, row.id), now
            )
        return doc


class LabMapper(Protocol):
    """Discrete lab results (IHE LAB-3 ORU^R01) → generated CR-BIO document; see ``mappings.crbio``."""

    async def map(self, row: Row, prov: Provenance, now: datetime) -> Document: ...
