"""Classification and CI-SIS volet rules ("Transmission de document(s) CDA en HL7v2", dmp-interop §3).

:func:`classify` is called on the ACK path: it checks the header (type, event, processing id,
version), sorts the message into a :class:`MessageKind` and applies the rules of that kind.
Violations raise :class:`ValidationError` subclasses (with ERR-2 location and 0357 code) or
``UnsupportedMessageError`` (200-203).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources

from passerelle.mappings.document import Action, Code, Flags
from passerelle.mappings.hl7v2.decode import Message, Segment
from passerelle.mappings.hl7v2.embedded import check_base64, decode_cda
from passerelle.mappings.hl7v2.errors import (
    RequiredFieldError,
    SegmentSequenceError,
    TableValueError,
    unsupported,
)
from passerelle.mappings.hl7v2.header import Header
from passerelle.mappings.hl7v2.patient import PatientIds, extract_ids
from passerelle.mappings.hl7v2.zfa import ConsentFeed, parse_zfa

CISIS_PROFILE = "CISIS_CDA_HL7_V2"
LPS_PROFILE = "CISIS_CDA_HL7_LPS"
META_SYSTEM = "MetaDMPMSS"

#: (ORC-1 or trigger) -> (action, OBX-11 of the document OBX)
_ORU_ACTIONS = {"NW": (Action.PUBLISH, "F"), "RO": (Action.REPLACE, "C"), "CA": (Action.DELETE, "D")}
_MDM_ACTIONS = {"T02": (Action.PUBLISH, "F"), "T10": (Action.REPLACE, "C"), "T04": (Action.DELETE, "D")}
_MDM_ORC = {"T02": "NW", "T10": "RO", "T04": "CA"}

#: The required MetaDMPMSS flags, in their fixed order, and the Flags field each sets.
REQUIRED_FLAGS: Sequence[tuple[str, str]] = (
    ("MASQUE_PS", "masque_ps"),
    ("INVISIBLE_PATIENT", "invisible_patient"),
    ("INVISIBLE_REP_LEGAUX", "invisible_rep_legaux"),
    ("CONNEXION_SECRETE", "connexion_secrete"),
    ("MODIF_CONF_CODE", "modif_conf_code"),
    ("DESTDMP", "dest_dmp"),
    ("DESTMSSANTEPS", "dest_mssante_ps"),
    ("DESTMSSANTEPAT", "dest_mssante_pat"),
)
OPTIONAL_FLAGS = {
    "ACK_RECEPTION": "ack_reception",
    "ACK_LECTURE_MSS": "ack_lecture_mss",
    "ACK_LECTURE": "ack_lecture_mss",  # spelling of the Trans_LPS_CDA_MSSante V1.0 examples
}
TEXT_FLAGS = frozenset({"CORPSMAIL_PS", "CORPSMAIL_PATIENT"})

ORU_VERSIONS = frozenset({"2.5"})
LAB_VERSIONS = frozenset({"2.5", "2.5.1"})
MDM_VERSIONS = frozenset({"2.6"})
ADT_VERSIONS = frozenset({"2.5", "2.5.1", "2.6"})


class MessageKind(StrEnum):
    ORU_DOCUMENT = "oru_document"
    MDM_DOCUMENT = "mdm_document"
    LAB_RESULTS = "lab_results"
    ADT_CONSENT = "adt_consent"
    UNSUPPORTED = "unsupported"

    @property
    def journal_kind(self) -> str:
        return _JOURNAL_KIND[self]


_JOURNAL_KIND = {
    MessageKind.ORU_DOCUMENT: "oru",
    MessageKind.MDM_DOCUMENT: "mdm",
    MessageKind.LAB_RESULTS: "lab",
    MessageKind.ADT_CONSENT: "adt",
    MessageKind.UNSUPPORTED: "hl7",
}


@dataclass(frozen=True, slots=True)
class EmbeddedDocument:
    """One document OBX. ``base64`` is the undecoded OBX-5.5 (decode with ``embedded.decode_cda``)."""

    obx_index: int  # position among the message's OBX segments (1-based)
    set_id: str  # OBX-1
    type_code: Code
    base64: str
    location: str  # ERR-2 location, e.g. "OBX^1^5"


@dataclass(frozen=True, slots=True)
class Classified:
    kind: MessageKind
    patient: PatientIds
    action: Action | None = None
    flags: Flags | None = None
    documents: tuple[EmbeddedDocument, ...] = ()
    consent: ConsentFeed | None = None
    warnings: tuple[str, ...] = field(default=())


@cache
def dmp_type_codes() -> frozenset[str]:
    """Type codes accepted for the DMP: JDV_J07 (package data) until J66 is published (see ADR 0002)."""
    data = json.loads(resources.files(__package__).joinpath("data/type_codes.json").read_text("utf-8"))
    return frozenset(c["code"] for c in data["concepts"])


def loc(seg: str, index: int, fld: int = 0, comp: int = 0) -> str:
    parts = [seg, str(index)]
    if fld:
        parts.append(str(fld))
    if comp:
        parts += ["1", str(comp)]
    return "^".join(parts)


def check_header(header: Header, accepted_processing_ids: Collection[str] | None) -> None:
    if accepted_processing_ids is not None and header.processing_id not in accepted_processing_ids:
        raise unsupported("processing id not accepted", location="MSH^1^11", reason="unsupported_processing_id")


def classify(
    msg: Message,
    header: Header,
    *,
    test_environment: bool = False,
    accepted_processing_ids: Collection[str] | None = None,
    check_documents: bool = True,
    accept_adt_without_zfa: bool = False,
) -> Classified:
    """Sort a decoded message and apply its rules. ``check_documents`` decodes the embedded base64
    and checks the XML is well-formed (else only the base64 alphabet is checked).
    ``accepted_processing_ids`` None skips the MSH-11 check (re-classification in the worker).
    ``accept_adt_without_zfa``: a PAM ADT without ZFA is accepted (kind ADT_CONSENT, ``consent`` None)
    instead of refused, for feeds that send every ADT event."""
    check_header(header, accepted_processing_ids)
    code, trigger = header.message_code, header.trigger
    if LPS_PROFILE in header.profiles:
        # "Transmission LPS de documents CDA / courriels MSSanté" flows from a platform to the LPS:
        # it is not something a gateway receives.
        raise unsupported(
            "CI-SIS LPS/MSSante volet is not an intake format", location="MSH^1^21", reason="unsupported_type"
        )
    pid = msg.first("PID")
    if code == "ORU":
        if trigger != "R01":
            raise unsupported("unsupported ORU event", location="MSH^1^9^1^2", reason="unsupported_event")
        ids = _require_patient(msg, pid, test_environment)
        if _is_document_oru(msg, header):
            if header.version not in ORU_VERSIONS:
                raise unsupported("ORU volet needs version 2.5", location="MSH^1^12", reason="unsupported_version")
            return _document(msg, MessageKind.ORU_DOCUMENT, ids, check_documents)
        if header.version not in LAB_VERSIONS:
            raise unsupported("LAB-3 needs version 2.5 or 2.5.1", location="MSH^1^12", reason="unsupported_version")
        return _lab(msg, ids)
    if code == "MDM":
        if trigger not in _MDM_ACTIONS:
            raise unsupported("unsupported MDM event", location="MSH^1^9^1^2", reason="unsupported_event")
        if header.version not in MDM_VERSIONS:
            raise unsupported("MDM volet needs version 2.6", location="MSH^1^12", reason="unsupported_version")
        ids = _require_patient(msg, pid, test_environment)
        return _document(msg, MessageKind.MDM_DOCUMENT, ids, check_documents, trigger=trigger)
    if code == "ADT":
        zfa = msg.first("ZFA")
        if zfa is None and not accept_adt_without_zfa:
            raise unsupported("ADT without ZFA segment", location="MSH^1^9", reason="unsupported_event")
        if header.version not in ADT_VERSIONS:
            raise unsupported("unsupported ADT version", location="MSH^1^12", reason="unsupported_version")
        if zfa is None:
            return Classified(MessageKind.ADT_CONSENT, extract_ids(msg, pid, test_environment=test_environment))
        ids = _require_patient(msg, pid, test_environment)
        consent = parse_zfa(msg, zfa, ids)
        return Classified(MessageKind.ADT_CONSENT, ids, consent=consent)
    raise unsupported("unsupported message type", location="MSH^1^9", reason="unsupported_type")


def _require_patient(msg: Message, pid: Segment | None, test_environment: bool) -> PatientIds:
    if pid is None:
        raise SegmentSequenceError("PID segment missing", location="PID")
    if not pid.field(3):
        raise RequiredFieldError("PID-3 patient identifier list missing", location="PID^1^3")
    return extract_ids(msg, pid, test_environment=test_environment)


def _is_meta(msg: Message, obx: Segment) -> bool:
    return msg.value(obx, 3, 3) == META_SYSTEM


def _is_cda_obx(msg: Message, obx: Segment) -> bool:
    return msg.value(obx, 2).upper() == "ED" and not _is_meta(msg, obx) and msg.value(obx, 5, 3).upper() == "XML"


def _is_document_oru(msg: Message, header: Header) -> bool:
    """The volet profile in MSH-21, or (profile forgotten) an ED OBX carrying XML. A LAB-3 result
    with an attached PDF (ED ``^AP^PDF^Base64``) stays a lab result."""
    if CISIS_PROFILE in header.profiles:
        return True
    return any(_is_cda_obx(msg, obx) for obx in msg.all("OBX"))


def _lab(msg: Message, ids: PatientIds) -> Classified:
    if msg.first("OBR") is None:
        raise SegmentSequenceError("OBR segment missing", location="OBR")
    return Classified(MessageKind.LAB_RESULTS, ids)


def _document(
    msg: Message, kind: MessageKind, ids: PatientIds, check_documents: bool, *, trigger: str = ""
) -> Classified:
    orc = msg.first("ORC")
    obr = msg.first("OBR")
    if kind is MessageKind.ORU_DOCUMENT:
        if orc is None:
            raise SegmentSequenceError("ORC segment missing", location="ORC")
        if obr is None:
            raise SegmentSequenceError("OBR segment missing", location="OBR")
        order_control = msg.value(orc, 1).upper()
        if order_control not in _ORU_ACTIONS:
            raise TableValueError("ORC-1 must be NW, RO or CA", location="ORC^1^1")
        action, status = _ORU_ACTIONS[order_control]
        type_code = _code(msg, obr, 4)
        type_loc = "OBR^1^4"
    else:
        action, status = _MDM_ACTIONS[trigger]
        txa = msg.first("TXA")
        if txa is None:
            raise SegmentSequenceError("TXA segment missing", location="TXA")
        if orc is not None and msg.value(orc, 1).upper() != _MDM_ORC[trigger]:
            raise TableValueError("ORC-1 does not match the trigger event", location="ORC^1^1")
        if not msg.value(txa, 12) and not msg.value(txa, 12, 3):
            raise RequiredFieldError("TXA-12 unique document number missing", location="TXA^1^12")
        if action is Action.REPLACE and not msg.value(txa, 13) and not msg.value(txa, 13, 3):
            raise RequiredFieldError("TXA-13 parent document missing for a replacement", location="TXA^1^13")
        if obr is not None and msg.value(obr, 4):
            type_code, type_loc = _code(msg, obr, 4), "OBR^1^4"
        else:
            type_code = Code(code=msg.value(txa, 2), system=msg.value(txa, 2, 3) or "LN")
            type_loc = "TXA^1^2"
        if not type_code.code:
            raise RequiredFieldError("document type code missing", location=type_loc)

    documents: list[EmbeddedDocument] = []
    meta: list[tuple[int, str, str]] = []  # (OBX position, OBX-3.1, OBX-5.1)
    cs = msg.delimiters.component
    # One pass, splitting each OBX field at most once: this loop is the hot part of the ACK path.
    for index, obx in enumerate(msg.all("OBX"), start=1):
        fields = obx.fields
        ident = fields[3].split(cs, 3) if len(fields) > 3 else [""]
        if len(ident) > 2 and ident[2] == META_SYSTEM:
            answer = fields[5].split(cs, 1)[0] if len(fields) > 5 else ""
            meta.append((index, msg.unescape(ident[0]).upper(), msg.unescape(answer).upper()))
            continue
        if len(fields) <= 2 or fields[2].upper() != "ED":
            continue
        documents.append(_document_obx(msg, obx, index, type_code, type_loc, status, check_documents))
    if not documents:
        raise RequiredFieldError("no document OBX (OBX-2 ED)", location="OBX")
    if kind is MessageKind.MDM_DOCUMENT and len(documents) > 1:
        raise SegmentSequenceError("MDM carries exactly one document", location=documents[1].location)
    flags = _flags(meta)
    if flags.dest_dmp:
        _check_sender(msg)
        if type_code.code not in dmp_type_codes():
            raise TableValueError("document type code not accepted by the DMP", location=type_loc)
    return Classified(kind, ids, action=action, flags=flags, documents=tuple(documents))


def _code(msg: Message, seg: Segment, n: int) -> Code:
    return Code(code=msg.value(seg, n), system=msg.value(seg, n, 3), display=msg.value(seg, n, 2))


def _document_obx(
    msg: Message,
    obx: Segment,
    index: int,
    type_code: Code,
    type_loc: str,
    status: str,
    check_documents: bool,
) -> EmbeddedDocument:
    where = f"OBX^{index}"
    if msg.value(obx, 3) != type_code.code:
        raise TableValueError(
            f"OBX-3 must equal {type_loc.split('^')[0]}-{type_loc.split('^')[2]}", location=f"{where}^3"
        )
    if msg.value(obx, 11).upper() != status:
        raise TableValueError(f"OBX-11 must be {status} for this action", location=f"{where}^11")
    raw5 = obx.field(5)
    cut = raw5.find(msg.delimiters.repetition)
    ed = (raw5 if cut == -1 else raw5[:cut]).split(msg.delimiters.component, 4)
    ed += [""] * (5 - len(ed))
    if msg.unescape(ed[2]).upper() != "XML":
        raise TableValueError("OBX-5.3 must be XML", location=f"{where}^5^1^3")
    if msg.unescape(ed[3]).upper() != "BASE64":
        raise TableValueError("OBX-5.4 must be Base64", location=f"{where}^5^1^4")
    data = ed[4]
    if check_documents:
        decode_cda(data, location=f"{where}^5^1^5")
    else:
        check_base64(data, location=f"{where}^5^1^5")
    return EmbeddedDocument(index, msg.value(obx, 1), type_code, data, f"{where}^5")


_REQUIRED_NAMES = dict(REQUIRED_FLAGS)
_EXPECTED_ORDER = [code for code, _ in REQUIRED_FLAGS]


def _flags(meta: list[tuple[int, str, str]]) -> Flags:
    values: dict[str, bool] = {}
    seen: list[str] = []
    for index, code, answer in meta:
        if code in TEXT_FLAGS:
            continue
        if answer not in {"Y", "N"}:
            raise TableValueError("MetaDMPMSS flag must be Y or N", location=f"OBX^{index}^5")
        if code in OPTIONAL_FLAGS:
            values[OPTIONAL_FLAGS[code]] = answer == "Y"
            continue
        if code not in _REQUIRED_NAMES:
            raise TableValueError("unknown MetaDMPMSS code", location=f"OBX^{index}^3")
        seen.append(code)
        values[_REQUIRED_NAMES[code]] = answer == "Y"
    if seen != _EXPECTED_ORDER:
        missing = [code for code in _EXPECTED_ORDER if code not in seen]
        if missing:
            raise RequiredFieldError(f"MetaDMPMSS flag {missing[0]} missing", location="OBX")
        raise SegmentSequenceError("MetaDMPMSS flags out of the fixed order", location="OBX")
    return Flags(**values)


def _check_sender(msg: Message) -> None:
    """DMP publication needs the PRT sender (PRT-4 SB): organisation (PRT-8) + person or device."""
    for prt in msg.all("PRT"):
        if msg.value(prt, 4).upper() == "SB":
            if not (msg.value(prt, 5) or msg.value(prt, 10)):
                raise RequiredFieldError("PRT sender: person (PRT-5) or device (PRT-10) missing", location="PRT^1^5")
            if not (msg.value(prt, 8) or msg.value(prt, 8, 10)):
                raise RequiredFieldError("PRT sender: organisation (PRT-8) missing", location="PRT^1^8")
            return
    raise RequiredFieldError("PRT sender (PRT-4 SB) required when DESTDMP=Y", location="PRT")
