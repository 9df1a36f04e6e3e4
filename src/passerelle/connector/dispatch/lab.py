"""Discrete lab results (IHE LAB-3 ORU^R01 without a document) → a generated CR-BIO document.

The worker's ``LabMapper``: reads the sender's laboratory identity and local-code → LOINC table from the
settings, looks up the version already sent for the same order (journal ``document_series``) so a
correction becomes a replacement, and records the new version.
"""

from __future__ import annotations

import logging
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.errors import MappingError
from passerelle.mappings import lab as crbio
from passerelle.mappings.codes.tables import LoincTable, loinc_table_file_name, parse_loinc_csv
from passerelle.mappings.document import Document, Provenance
from passerelle.mappings.hl7v2.decode import Message
from passerelle.mappings.hl7v2.header import salvage_header
from passerelle.mappings.lab.model import Address, Laboratory, Person
from passerelle.queue.model import Row, SeriesEntry
from passerelle.queue.ports import ReferenceStore

log = logging.getLogger("passerelle.connector.dispatch.lab")


class LabSiteSettings(BaseModel):
    """The laboratory a sender speaks for (the header of the generated CR-BIO)."""

    model_config = ConfigDict(extra="forbid")

    finess: str = Field(min_length=9, max_length=9, description="FINESS (9 characters) of the laboratory")
    name: str
    street: str = ""
    postal_code: str = ""
    city: str = ""
    telecom: list[str] = Field(default_factory=list, description="URIs: tel:..., mailto:...")
    #: Used when OBR-32 (validating biologist) is empty: IdNat_PS (8 + RPPS) and name.
    default_validator_id: str = ""
    default_validator_family: str = ""
    default_validator_given: str = ""

    def laboratory(self) -> Laboratory:
        return Laboratory(
            finess=self.finess,
            name=self.name,
            address=Address(street=self.street, postal_code=self.postal_code, city=self.city),
            telecom=tuple(self.telecom),
        )

    def validator(self) -> Person | None:
        if not self.default_validator_id:
            return None
        return Person(
            id=self.default_validator_id, family=self.default_validator_family, given=self.default_validator_given
        )


class LabSettings(BaseModel):
    """``lab``: generation of CR-BIO documents from discrete results."""

    model_config = ConfigDict(extra="forbid")

    #: Per-sender LOINC tables: ``<folder>/<MSH-3>_<MSH-4>.csv`` (see config/loinc/README.md).
    loinc_dir: Path = Path("config/loinc")
    timezone: str = "Europe/Paris"
    #: Key: sender ``MSH-3^MSH-4`` (or ``MSH-3``). A sender with no entry cannot get CR-BIO documents.
    senders: dict[str, LabSiteSettings] = Field(default_factory=dict)

    def site_for(self, sender: str) -> LabSiteSettings | None:
        return self.senders.get(sender) or self.senders.get(sender.split("^", 1)[0])


@dataclass(frozen=True, slots=True)
class _LoadedTable:
    signature: tuple[int, int] | None  # (mtime in ns, size) of the file it was read from; None: no file
    table: LoincTable | None


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclass(eq=False)
class CrBioLabMapper:
    """The row mapper's ``LabMapper``: a sender's LAB-3 results → its laboratory's CR-BIO document."""

    journal: ReferenceStore
    settings: LabSettings
    hl7: Hl7IntakeSettings
    _: KW_ONLY
    oid_root: str
    test_environment: bool
    _tables: dict[str, _LoadedTable] = field(default_factory=dict, init=False)

    def _table(self, sender: str) -> LoincTable | None:
        """The sender's table, read again when its file changed (config/loinc/README.md: add a code, then
        replay the message, no restart). A changed file that does not parse (half written, a bad line)
        leaves the last good table in use, with an error logged; with none, the document is refused."""
        path = self.settings.loinc_dir / loinc_table_file_name(sender)
        signature = _file_signature(path)
        loaded = self._tables.get(sender)
        if loaded is not None and loaded.signature == signature:
            return loaded.table
        try:
            table = parse_loinc_csv(path.read_text(encoding="utf-8"), sender) if signature is not None else None
        except (MappingError, OSError, UnicodeDecodeError) as exc:
            if loaded is None or loaded.table is None:
                if isinstance(exc, MappingError):
                    raise
                raise MappingError(f"LOINC table {path.name} cannot be read ({exc})", reason="loinc_table") from exc
            log.error(
                "LOINC table %s changed but cannot be read (%s); the previous version stays in use", path.name, exc
            )
            return loaded.table
        self._tables[sender] = _LoadedTable(signature, table)
        return table

    def context(self, sender: str, now: datetime, previous: SeriesEntry | None) -> crbio.OruContext:
        site = self.settings.site_for(sender)
        if site is None:
            raise MappingError(
                f"no laboratory configured for sender {sender!r} (settings lab.senders)", reason="lab_not_configured"
            )
        return crbio.OruContext(
            oid_root=self.oid_root,
            now=now,
            laboratory=site.laboratory(),
            loinc=self._table(sender),
            sender=sender,
            previous=crbio.PreviousVersion(previous.set_id, previous.version, previous.unique_id) if previous else None,
            validator=site.validator(),
            timezone=self.settings.timezone,
            test_environment=self.test_environment,
        )

    def message(self, raw: bytes, sender: str) -> Message:
        """The message decoded with the sender's charset options (the same decoder as intake)."""
        return self.hl7.decode(raw, sender)

    def preview(self, raw: bytes, prov: Provenance, now: datetime) -> Document:
        """For ``passerelle map``: the document as a first version (no journal, so no previous version)."""
        header = salvage_header(raw)  # the sender first: its options decide how the message is decoded
        sender = header.sender if header is not None else ""
        return crbio.map_lab_results(self.message(raw, sender), self.context(sender, now, None), prov)

    async def map(self, row: Row, prov: Provenance, now: datetime) -> Document:
        msg = self.message(row.raw, row.sender)
        key = crbio.series_key(msg, row.sender)
        previous = await self.journal.series_get(key)
        doc = crbio.map_lab_results(msg, self.context(row.sender, now, previous), prov)
        if previous is None or previous.unique_id != doc.unique_id:
            await self.journal.series_put(SeriesEntry(key, doc.unique_id, doc.set_id, doc.version, row.id), now)
        return doc
