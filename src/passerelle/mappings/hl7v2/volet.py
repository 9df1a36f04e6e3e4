"""Classification and CI-SIS volet rules ("Transmission de document(s) CDA en HL7v2";
docs/interop-reference.md, "CI-SIS volet").

:func:`classify` is called on the ACK path: it checks the header (type, event, processing id,
version), sorts the message into a :class:`MessageKind` and applies the rules of that kind.
Violations raise :class:`ValidationError` subclasses (with ERR-2 location and 0357 code) or
``UnsupportedMessageError`` (200-203).

What the volet's published versions accept (ADR 0022): V2.1 orders by ORC-1 ``NW``/``RO``/``CA``
with the matching OBX-11; V1.2 and V2.0 send ORC-1 ``SC`` (status change) and let OBX-11 of the
document OBX say the action (``F`` publish, ``C`` replace, ``D`` delete). Messages of the V1 profile
(``CISIS_CDA_HL7_V1``) name their flags without the ``MetaDMPMSS`` system and with older spellings,
carry the document type in OBX-3 / TXA-2 (OBR-4 is the exam), and have no sender PRT.
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
#: The first published profile (volet V1.x, Ségur wave 1).
CISIS_V1_PROFILE = "CISIS_CDA_HL7_V1"
LPS_PROFILE = "CISIS_CDA_HL7_LPS"
META_SYSTEM = "MetaDMPMSS"
#: MSH-11 values of messages that are not real patient data: accepted only in a test environment.
TEST_PROCESSING_IDS = frozenset({"D", "T"})
_PROCESSING_NAMES = {"D": "debugging", "T": "training"}

#: (ORC-1 or trigger) -> (action, OBX-11 of the document OBX)
_ORU_ACTIONS = {"NW": (Action.PUBLISH, "F"), "RO": (Action.REPLACE, "C"), "CA": (Action.DELETE, "D")}
_MDM_ACTIONS = {"T02": (Action.PUBLISH, "F"), "T10": (Action.REPLACE, "C"), "T04": (Action.DELETE, "D")}
_MDM_ORC = {"T02": "NW", "T10": "RO", "T04": "CA"}
#: ORC-1 "status change" (V1.2, V2.0): the document OBX-11 carries the action.
STATUS_CHANGE = "SC"
_STATUS_ACTIONS = {"F": Action.PUBLISH, "C": Action.REPLACE, "D": Action.DELETE}

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
OPTIONAL_FLAGS = {"ACK_RECEPTION": "ack_reception", "ACK_LECTURE_MSS": "ack_lecture_mss"}
#: Spellings of older examples: V1.2 (two flags) and the Trans_LPS_CDA_MSSante V1.0 read ack.
FLAG_ALIASES = {
    "INVISIBLE_REPRESENTANTS_LEGAUX": "INVISIBLE_REP_LEGAUX",
    "MODIF_CONFIDENTIALITYCODE": "MODIF_CONF_CODE",
    "ACK_LECTURE": "ACK_LECTURE_MSS",
}
#: Metadata OBX that are neither a flag nor a document: mail bodies, and V1.2's lot composition.
NON_DOCUMENT_CODES = frozenset({"CORPSMAIL_PS", "CORPSMAIL_PATIENT", "COMP_LOT"})
_META_CODES = frozenset({*dict(REQUIRED_FLAGS), *OPTIONAL_FLAGS, *FLAG_ALIASES, *NON_DOCUMENT_CODES})

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


@dataclass(frozen=True, slots=True)
class _Order:
    """What the order segments say about the documents: the action, the OBX-11 they must carry, and
    the type they must have (None: each document OBX-3 is its type, as in V1)."""

    action: Action | None  # None: ORC-1 SC, the first document OBX-11 decides
    status: str
    type_code: Code | None
    type_loc: str


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


def processing_ids(accepted: Collection[str], *, test_environment: bool) -> frozenset[str]:
    """MSH-11 values accepted: the configured ones, plus debugging/training (D, T) in a test environment."""
    return frozenset(accepted) | TEST_PROCESSING_IDS if test_environment else frozenset(accepted)


def check_header(
    header: Header, accepted_processing_ids: Collection[str] | None, *, test_environment: bool = False
) -> None:
    if accepted_processing_ids is None:
        return
    processing_id = header.processing_id
    if processing_id in processing_ids(accepted_processing_ids, test_environment=test_environment):
        return
    if processing_id in TEST_PROCESSING_IDS:
        name = _PROCESSING_NAMES[processing_id]
        message = f"processing id {processing_id} ({name}) is accepted only when the gateway runs in a test environment"
    else:
        message = "processing id not accepted"
    raise unsupported(message, location="MSH^1^11", reason="unsupported_processing_id")


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
    ``accepted_processing_ids`` None skips the MSH-11 check (re-classification in the worker); in a
    test environment MSH-11 ``D`` and ``T`` are accepted on top of it.
    ``accept_adt_without_zfa``: a PAM ADT without ZFA is accepted (kind ADT_CONSENT, ``consent`` None)
    instead of refused, for feeds that send every ADT event."""
    check_header(header, accepted_processing_ids, test_environment=test_environment)
    if LPS_PROFILE in header.profiles:
        # "Transmission LPS de documents CDA / courriels MSSanté" flows from a platform to the LPS:
        # it is not something a gateway receives.
        raise unsupported(
            "CI-SIS LPS/MSSante volet is not an intake format", location="MSH^1^21", reason="unsupported_type"
        )
    if header.message_code == "ORU":
        return _classify_oru(msg, header, test_environment, check_documents)
    if header.message_code == "MDM":
        return _classify_mdm(msg, header, test_environment, check_documents)
    if header.message_code == "ADT":
        return _classify_adt(msg, header, test_environment, accept_adt_without_zfa)
    raise unsupported("unsupported message type", location="MSH^1^9", reason="unsupported_type")


def _classify_oru(msg: Message, header: Header, test_environment: bool, check_documents: bool) -> Classified:
    if header.trigger != "R01":
        raise unsupported("unsupported ORU event", location="MSH^1^9^1^2", reason="unsupported_event")
    ids = _require_patient(msg, msg.first("PID"), test_environment)
    if not _is_document_oru(msg, header):
        if header.version not in LAB_VERSIONS:
            raise unsupported("LAB-3 needs version 2.5 or 2.5.1", location="MSH^1^12", reason="unsupported_version")
        if msg.first("OBR") is None:
            raise SegmentSequenceError("OBR segment missing", location="OBR")
        return Classified(MessageKind.LAB_RESULTS, ids)
    if header.version not in ORU_VERSIONS:
        raise unsupported("ORU volet needs version 2.5", location="MSH^1^12", reason="unsupported_version")
    order = _oru_order(msg, header)
    return _documents(msg, header, MessageKind.ORU_DOCUMENT, ids, order, check_documents)


def _classify_mdm(msg: Message, header: Header, test_environment: bool, check_documents: bool) -> Classified:
    if header.trigger not in _MDM_ACTIONS:
        raise unsupported("unsupported MDM event", location="MSH^1^9^1^2", reason="unsupported_event")
    if header.version not in MDM_VERSIONS:
        raise unsupported("MDM volet needs version 2.6", location="MSH^1^12", reason="unsupported_version")
    ids = _require_patient(msg, msg.first("PID"), test_environment)
    order = _mdm_order(msg, header)
    return _documents(msg, header, MessageKind.MDM_DOCUMENT, ids, order, check_documents)


def _classify_adt(msg: Message, header: Header, test_environment: bool, accept_without_zfa: bool) -> Classified:
    zfa = msg.first("ZFA")
    if zfa is None and not accept_without_zfa:
        raise unsupported("ADT without ZFA segment", location="MSH^1^9", reason="unsupported_event")
    if header.version not in ADT_VERSIONS:
        raise unsupported("unsupported ADT version", location="MSH^1^12", reason="unsupported_version")
    pid = msg.first("PID")
    if zfa is None:
        return Classified(MessageKind.ADT_CONSENT, extract_ids(msg, pid, test_environment=test_environment))
    ids = _require_patient(msg, pid, test_environment)
    return Classified(MessageKind.ADT_CONSENT, ids, consent=parse_zfa(msg, zfa, ids))


def _require_patient(msg: Message, pid: Segment | None, test_environment: bool) -> PatientIds:
    if pid is None:
        raise SegmentSequenceError("PID segment missing", location="PID")
    if not pid.field(3):
        raise RequiredFieldError("PID-3 patient identifier list missing", location="PID^1^3")
    return extract_ids(msg, pid, test_environment=test_environment)


def _is_meta(msg: Message, obx: Segment) -> bool:
    return msg.value(obx, 3, 3) == META_SYSTEM or _canonical(msg.value(obx, 3).upper()) in _META_CODES


def is_cda_obx(msg: Message, obx: Segment) -> bool:
    """An ED OBX carrying XML that is not a metadata OBX: an embedded document."""
    fields = obx.fields
    raw = fields[2] if len(fields) > 2 else ""
    if raw[:2].upper() != "ED" and msg.delimiters.escape not in raw:
        return False  # OBX-2 cannot read "ED" (a lab result's NM, ST...): no need to decode it
    return msg.value(obx, 2).upper() == "ED" and not _is_meta(msg, obx) and msg.value(obx, 5, 3).upper() == "XML"


def _is_document_oru(msg: Message, header: Header) -> bool:
    """The volet profile in MSH-21, or (profile forgotten) an ED OBX carrying XML. A LAB-3 result
    with an attached PDF (ED ``^AP^PDF^Base64``) stays a lab result."""
    if CISIS_PROFILE in header.profiles or CISIS_V1_PROFILE in header.profiles:
        return True
    return any(is_cda_obx(msg, obx) for obx in msg.all("OBX"))


def _code(msg: Message, seg: Segment, n: int) -> Code:
    return Code(code=msg.value(seg, n), system=msg.value(seg, n, 3), display=msg.value(seg, n, 2))


def _oru_order(msg: Message, header: Header) -> _Order:
    orc = msg.first("ORC")
    obr = msg.first("OBR")
    if orc is None:
        raise SegmentSequenceError("ORC segment missing", location="ORC")
    if obr is None:
        raise SegmentSequenceError("OBR segment missing", location="OBR")
    order_control = msg.value(orc, 1).upper()
    type_code = None if CISIS_V1_PROFILE in header.profiles else _code(msg, obr, 4)
    if order_control == STATUS_CHANGE:
        return _Order(None, "", type_code, "OBR^1^4")
    if order_control not in _ORU_ACTIONS:
        raise TableValueError("ORC-1 must be NW, RO, CA or SC", location="ORC^1^1")
    action, status = _ORU_ACTIONS[order_control]
    return _Order(action, status, type_code, "OBR^1^4")


def _mdm_order(msg: Message, header: Header) -> _Order:
    trigger = header.trigger
    action, status = _MDM_ACTIONS[trigger]
    orc, obr, txa = msg.first("ORC"), msg.first("OBR"), msg.first("TXA")
    if txa is None:
        raise SegmentSequenceError("TXA segment missing", location="TXA")
    if orc is not None and msg.value(orc, 1).upper() not in (_MDM_ORC[trigger], STATUS_CHANGE):
        raise TableValueError("ORC-1 does not match the trigger event", location="ORC^1^1")
    if not msg.value(txa, 12) and not msg.value(txa, 12, 3):
        raise RequiredFieldError("TXA-12 unique document number missing", location="TXA^1^12")
    if action is Action.REPLACE and not msg.value(txa, 13) and not msg.value(txa, 13, 3):
        raise RequiredFieldError("TXA-13 parent document missing for a replacement", location="TXA^1^13")
    if obr is not None and msg.value(obr, 4) and CISIS_V1_PROFILE not in header.profiles:
        return _Order(action, status, _code(msg, obr, 4), "OBR^1^4")
    type_code = Code(code=msg.value(txa, 2), system=msg.value(txa, 2, 3) or "LN")
    if not type_code.code:
        raise RequiredFieldError("document type code missing", location="TXA^1^2")
    return _Order(action, status, type_code, "TXA^1^2")


def _canonical(code: str) -> str:
    return FLAG_ALIASES.get(code, code)


def _documents(
    msg: Message, header: Header, kind: MessageKind, ids: PatientIds, order: _Order, check_documents: bool
) -> Classified:
    document_obx, meta = _split_obx(msg)
    if not document_obx:
        raise RequiredFieldError("no document OBX (OBX-2 ED)", location="OBX")
    if kind is MessageKind.MDM_DOCUMENT and len(document_obx) > 1:
        raise SegmentSequenceError("MDM carries exactly one document", location=f"OBX^{document_obx[1][0]}^5")
    action, status = _action(msg, order, document_obx)
    documents = tuple(_document_obx(msg, obx, index, order, status, check_documents) for index, obx in document_obx)
    flags = _flags(meta)
    if flags.dest_dmp:
        _check_for_dmp(msg, header, order, documents)
    return Classified(kind, ids, action=action, flags=flags, documents=documents)


def _split_obx(msg: Message) -> tuple[list[tuple[int, Segment]], list[tuple[int, str, str]]]:
    """(document OBX with their position, MetaDMPMSS flags as (position, code, Y/N answer)).

    One pass, splitting each OBX field at most once: this loop is the hot part of the ACK path."""
    documents: list[tuple[int, Segment]] = []
    meta: list[tuple[int, str, str]] = []
    cs = msg.delimiters.component
    for index, obx in enumerate(msg.all("OBX"), start=1):
        fields = obx.fields
        ident = fields[3].split(cs, 3) if len(fields) > 3 else [""]
        code = _canonical(msg.unescape(ident[0]).upper())
        if (len(ident) > 2 and ident[2] == META_SYSTEM) or code in _META_CODES:
            if code not in NON_DOCUMENT_CODES:
                answer = fields[5].split(cs, 1)[0] if len(fields) > 5 else ""
                meta.append((index, code, msg.unescape(answer).upper()))
        elif len(fields) > 2 and fields[2].upper() == "ED":
            documents.append((index, obx))
    return documents, meta


def _action(msg: Message, order: _Order, document_obx: list[tuple[int, Segment]]) -> tuple[Action, str]:
    """The action and the OBX-11 every document must carry; for ORC-1 SC, the first document's OBX-11."""
    if order.action is not None:
        return order.action, order.status
    index, first = document_obx[0]
    status = msg.value(first, 11).upper()
    if status not in _STATUS_ACTIONS:
        raise TableValueError("OBX-11 must be F, C or D when ORC-1 is SC", location=f"OBX^{index}^11")
    return _STATUS_ACTIONS[status], status


def _document_obx(
    msg: Message, obx: Segment, index: int, order: _Order, status: str, check_documents: bool
) -> EmbeddedDocument:
    where = f"OBX^{index}"
    type_code = order.type_code or _code(msg, obx, 3)
    if order.type_code is not None and msg.value(obx, 3) != order.type_code.code:
        seg, _, fld = order.type_loc.split("^")
        raise TableValueError(f"OBX-3 must equal {seg}-{fld}", location=f"{where}^3")
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
    if check_documents:
        decode_cda(ed[4], location=f"{where}^5^1^5")
    else:
        check_base64(ed[4], location=f"{where}^5^1^5")
    return EmbeddedDocument(index, msg.value(obx, 1), type_code, ed[4], f"{where}^5")


_REQUIRED_NAMES = dict(REQUIRED_FLAGS)
_EXPECTED_ORDER = [code for code, _ in REQUIRED_FLAGS]


def _flags(meta: list[tuple[int, str, str]]) -> Flags:
    values: dict[str, bool] = {}
    seen: list[str] = []
    for index, code, answer in meta:
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


def _check_for_dmp(msg: Message, header: Header, order: _Order, documents: tuple[EmbeddedDocument, ...]) -> None:
    """DESTDMP=Y: every document type in the DMP list, and (V2) the sender PRT."""
    if CISIS_V1_PROFILE not in header.profiles:
        _check_sender(msg)
    for doc in documents:
        if doc.type_code.code not in dmp_type_codes():
            location = order.type_loc if order.type_code is not None else f"OBX^{doc.obx_index}^3"
            raise TableValueError("document type code not accepted by the DMP", location=location)


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
