"""IHE LAB-3 style ORU^R01 (discrete OBR/OBX, no embedded document) → :class:`LabReport`.

Read with the project's one HL7v2 decoder (:mod:`passerelle.mappings.hl7v2.decode`: charsets, escapes,
MSH-2 variants; ADR 0014). Local result codes are translated to LOINC with the sender's table; units
to UCUM; HL7 abnormal flags to the CI-SIS ObservationInterpretation codes
(:mod:`passerelle.mappings.lab.results`). A correction (OBR-25 or OBX-11 = C) becomes a replacement of
the previous version given in the context; a cancellation (ORC-1 = CA, or every OBX-11 = D) becomes a
deletion of it. Every refusal is a :class:`MappingError` naming the segment and field (its location is
``SEG^occurrence^field``), never a value that could identify the patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TypedDict
from zoneinfo import ZoneInfo

from passerelle.errors import MappingError, ParseError, UnsupportedMessageError
from passerelle.mappings.codes import LoincTable
from passerelle.mappings.document import Lineage
from passerelle.mappings.hl7v2.decode import Message, message_from_text
from passerelle.mappings.lab.batteries import read_batteries
from passerelle.mappings.lab.groups import Group, order_numbers, read_groups
from passerelle.mappings.lab.ids import set_id_for, unique_id_for
from passerelle.mappings.lab.model import (
    BIOLOGIST,
    Laboratory,
    LabPatient,
    LabReport,
    Person,
    Specimen,
)
from passerelle.mappings.lab.parties import patient, practitioner
from passerelle.mappings.lab.results import result_status
from passerelle.mappings.lab.segments import Seg, segments


@dataclass(frozen=True)
class PreviousVersion:
    """The version already delivered for this order (looked up by the caller, e.g. in the journal)."""

    set_id: str
    version: int
    unique_id: str

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.unique_id, self.set_id, self.version)


@dataclass(frozen=True)
class OruContext:
    """What the ORU does not carry: configuration of the sender and the state of earlier deliveries."""

    oid_root: str  # root of generated document OIDs (the gateway's or the lab's)
    now: datetime
    laboratory: Laboratory
    loinc: LoincTable | None = None
    sender: str = ""  # defaults to MSH-3^MSH-4; part of the deterministic ids
    previous: PreviousVersion | None = None
    validator: Person | None = None  # used when OBR-32 is empty
    timezone: str = "Europe/Paris"  # for HL7 times without UTC offset
    test_environment: bool = False  # accept the test/demo INS OIDs
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class _Read:
    """The parts of the message every outcome (publish, replace, delete) needs."""

    msh: Seg
    orc: Seg | None
    groups: list[Group]
    statuses: dict[int, list[str]]  # OBR occurrence -> OBX-11 of its results
    placer: str
    filler: str
    key: str
    sender: str
    patient: LabPatient
    validator: Person
    prescriber: Person | None


def message_of(message: str | Message) -> Message:
    """A decoded message, or text read with the project's decoder (a string built in code)."""
    if isinstance(message, Message):
        return message
    try:
        return message_from_text(message)
    except ParseError as exc:
        raise MappingError("message cannot be read as HL7v2 ER7", location="MSH^1^1") from exc


def lab_segments(message: str | Message) -> list[Seg]:
    segs = segments(message_of(message))
    if not segs or segs[0].name != "MSH":
        raise MappingError("message does not start with MSH", location="MSH^1^1")
    return segs


def series_sender(msh: Seg, sender: str = "") -> str:
    """The sender part of the ids and of the series key: the given one, else ``MSH-3^MSH-4``."""
    return sender or f"{msh.value(3)}^{msh.value(4)}"


# --- the parts of the message -------------------------------------------------------------------


def _validator(groups: list[Group], context: OruContext) -> Person:
    """OBR-32 (principal result interpreter) of the first group giving one, else the configured one."""
    found = (
        next((p for g in groups if (p := practitioner(g.obr, 32, in_subcomponents=True)) is not None), None)
        or context.validator
    )
    if found is None:
        raise groups[0].obr.error(32, "no principal result interpreter and no default biologist configured")
    return found if found.profession is not None else found.model_copy(update={"profession": BIOLOGIST})


def _prescriber(orc: Seg | None, first_obr: Seg) -> Person | None:
    """ORC-12 (ordering provider), else OBR-16."""
    found = practitioner(orc, 12, required=False) if orc is not None else None
    return found or practitioner(first_obr, 16, required=False)


def _read(segs: list[Seg], context: OruContext) -> _Read:
    msh = segs[0]
    if (msh.value(9, 1), msh.value(9, 2)) != ("ORU", "R01"):
        raise UnsupportedMessageError("MSH-9: only ORU^R01 carries lab results", location="MSH^1^9")
    pid = next((s for s in segs if s.name == "PID"), None)
    if pid is None:
        raise MappingError("PID segment missing", location="PID^1^0")
    orc = next((s for s in segs if s.name == "ORC"), None)
    groups = read_groups(segs)
    placer, filler, key = order_numbers(segs)
    statuses = {g.obr.occurrence: [result_status(o) for o in g.obx] for g in groups}
    if not any(statuses.values()):
        raise MappingError("no OBX result in the message", location="OBX^1^0")
    lab_patient = patient(pid, test_environment=context.test_environment)
    return _Read(
        msh=msh,
        orc=orc,
        groups=groups,
        statuses=statuses,
        placer=placer,
        filler=filler,
        key=key,
        sender=series_sender(msh, context.sender),
        patient=lab_patient,
        validator=_validator(groups, context),
        prescriber=_prescriber(orc, groups[0].obr),
    )


def _prescribed(orc: Seg | None, tz: tzinfo, specimens: list[Specimen]) -> datetime | None:
    """When the order was written: ORC-15 (order effective time), else ORC-9 when it is not later than
    the first specimen collection (in a result message ORC-9 may be the time of the result transaction)."""
    if orc is None:
        return None
    effective = orc.time(15, tz)
    if effective is not None:
        return effective
    when = orc.time(9, tz)
    first = min((s.collected for s in specimens), default=None)
    return when if when is not None and first is not None and when <= first else None


# --- the three outcomes -------------------------------------------------------------------------


class _Parties(TypedDict):
    patient: LabPatient
    laboratory: Laboratory
    validator: Person
    prescriber: Person | None
    order_number: str
    filler_number: str


def _parties(read: _Read, context: OruContext) -> _Parties:
    """Who and which order the report is about, whatever the outcome."""
    return {
        "patient": read.patient,
        "laboratory": context.laboratory,
        "validator": read.validator,
        "prescriber": read.prescriber,
        "order_number": read.placer,
        "filler_number": read.filler,
    }


def _cancelled(read: _Read) -> bool:
    all_obx = [s for ss in read.statuses.values() for s in ss]
    return (read.orc is not None and read.orc.value(1).upper() == "CA") or all(s == "D" for s in all_obx)


def _corrected(read: _Read) -> bool:
    all_obx = [s for ss in read.statuses.values() for s in ss]
    return any(s == "C" for s in all_obx) or any(g.obr.text(25).upper() == "C" for g in read.groups)


def _deletion(read: _Read, context: OruContext) -> LabReport:
    previous = context.previous
    if previous is None:
        raise MappingError(
            "cancellation of a report that was never delivered (no previous version known)",
            location=read.orc.loc(1) if read.orc else "OBX^1^11",
            reason="delete_unknown_document",
        )
    return LabReport(
        **previous.lineage.deletion().fields(),
        **_parties(read, context),
        validated=context.now,
        created=context.now,
    )


def _lineage(read: _Read, context: OruContext) -> Lineage:
    """A replacement of the previous version, or a first one."""
    previous = context.previous
    if previous is not None:
        return previous.lineage.successor(unique_id_for(context.oid_root, read.sender, read.key, previous.version + 1))
    if _corrected(read):
        raise MappingError(
            "correction of a report that was never delivered (no previous version known)",
            location=read.groups[0].obr.loc(25),
            reason="replacement_without_original",
        )
    return Lineage(
        unique_id_for(context.oid_root, read.sender, read.key, 1), set_id_for(context.oid_root, read.sender, read.key)
    )


def from_oru(message: str | Message, context: OruContext) -> LabReport:
    """Read a LAB-3 ORU^R01 (decoded message, or its text) into a LabReport; see the module docstring."""
    read = _read(lab_segments(message), context)
    if _cancelled(read):
        return _deletion(read, context)
    lineage = _lineage(read, context)
    tz = context.tz
    batteries, specimens = read_batteries(read.groups, read.statuses, read.key, context.loinc, tz)
    release = next((t for g in read.groups if (t := g.obr.time(22, tz)) is not None), None)
    return LabReport(
        **lineage.fields(),
        **_parties(read, context),
        prescribed=_prescribed(read.orc, tz, specimens),
        validated=release or context.now,
        created=read.msh.time(7, tz) or context.now,
        received=min((s.received for s in specimens if s.received), default=None),
        specimens=tuple(specimens),
        batteries=tuple(batteries),
    )
