"""CI-SIS "Transmission de document(s) CDA en HL7v2": ORU^R01 / MDM^T02|T10|T04 with an embedded CDA → Document.

The CDA header gives the metadata (:mod:`passerelle.mappings.cda.reader`); the HL7v2 message then adds or
overrides what the volet puts there (docs/interop-reference.md, "XDS metadata" and "CI-SIS volet"):

* confidentiality: CDA N/R/V first, then ``MASQUE_PS`` / ``INVISIBLE_PATIENT`` /
  ``INVISIBLE_REPRESENTANTS_LEGAUX`` for each MetaDMPMSS flag valued ``Y`` (the flag spelled
  ``INVISIBLE_REP_LEGAUX`` maps to the third code; ``CONNEXION_SECRETE=Y`` forces it, rule 20);
* action and flags: from :func:`passerelle.mappings.hl7v2.volet.classify`, the same volet rules as
  the ACK path (ORU ``ORC-1``/``OBX-11``: NW/F publish, RO/C replace, CA/D delete; MDM trigger
  T02/T10/T04; the 8 MetaDMPMSS flags in their fixed order);
* replaces: CDA ``relatedDocument[@typeCode='RPLC']`` else ``TXA-13``; for a deletion, the
  document carried (its own id); an ORU replacement with neither (the ANS Ségur example) keeps
  ``replaces`` empty and the adapter resolves the current version by ``set_id``;
* submission author: PRT with PRT-4 = ``SB`` (PRT-5 person, PRT-8 organisation, PRT-10 device);
* identity: :func:`passerelle.mappings.identity.rules.qualify_hl7_patient` (PID-3 INS, PID-32 VALI,
  equality with the CDA recordTarget);
* provenance: channel and journal id as given, sender ``MSH-3^MSH-4``, message id ``MSH-10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from passerelle.errors import MappingError, ParseError, PasserelleError, UnsupportedMessageError, ValidationError
from passerelle.mappings.cda.reader import document_from_cda
from passerelle.mappings.cda.safe_xml import DEFAULT_LIMITS, CdaLimits, parse_cda
from passerelle.mappings.document import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    PS_ID_OID,
    Action,
    Author,
    Code,
    Document,
    Flags,
    Provenance,
    confidentiality_code,
)
from passerelle.mappings.hl7v2 import embedded
from passerelle.mappings.hl7v2.decode import Message, Segment, decode_message
from passerelle.mappings.hl7v2.errors import DataTypeError
from passerelle.mappings.hl7v2.header import Header, read_header
from passerelle.mappings.hl7v2.volet import Classified, MessageKind, classify, is_cda_obx
from passerelle.mappings.identity.rules import Cx, qualify_hl7_patient


@dataclass(frozen=True, slots=True)
class EmbeddedDocument:
    """One document OBX: its index among OBX segments (1-based), OBX-3.1, OBX-11 and the decoded bytes."""

    obx_index: int
    type_code: str
    status: str
    content: bytes


def decode_base64(data: str, *, location: str) -> bytes:
    """Base64 from OBX-5.5 (missing ``=`` padding tolerated, as on the ACK path); the worker reads a
    stored message, so a failure here is a :class:`ParseError` of that message."""
    try:
        return embedded.decode_base64("".join(data.split()), location=location)
    except DataTypeError as exc:
        raise ParseError("document OBX-5 is not valid Base64", location=location, reason="base64") from exc


def embedded_documents(msg: Message) -> list[EmbeddedDocument]:
    """Every OBX of type ED whose OBX-5.3 is ``XML`` and which is not a MetaDMPMSS/mail-body OBX."""
    docs: list[EmbeddedDocument] = []
    for index, obx in enumerate(msg.all("OBX"), start=1):
        if not is_cda_obx(msg, obx):
            continue
        if msg.value(obx, 5, 4).strip().upper() != "BASE64":
            raise ParseError("document OBX-5.4 must be Base64", location=f"OBX^{index}^5^4", reason="encoding")
        payload = msg.value(obx, 5, 5)
        if not payload:
            raise ParseError("document OBX-5.5 is empty", location=f"OBX^{index}^5^5", reason="required")
        content = decode_base64(payload, location=f"OBX^{index}^5^5")
        docs.append(EmbeddedDocument(index, msg.value(obx, 3).strip(), msg.value(obx, 11).strip().upper(), content))
    return docs


def _ei(msg: Message, seg: Segment | None, n: int) -> str:
    """EI as a document id: ``ext^^root^ISO`` → ``root^ext``; a bare OID stays as is."""
    entity = msg.value(seg, n, 1).strip()
    universal = msg.value(seg, n, 3).strip()
    if universal and entity:
        return f"{universal}^{entity}"
    return entity or universal


def submission_author(msg: Message) -> Author | None:
    """The PRT with PRT-4.1 = SB: PRT-5 person (XCN), PRT-8 organisation (XON), PRT-10 device."""
    for prt in msg.all("PRT"):
        if msg.value(prt, 4).strip().upper() != "SB":
            continue
        person_id = msg.value(prt, 5, 1).strip()
        authority = msg.value(prt, 5, 9, 2).strip()
        if authority and authority != PS_ID_OID:
            person_id = f"{authority}^{person_id}"
        return Author(
            person_id=person_id,
            family=msg.value(prt, 5, 2).strip(),
            given=msg.value(prt, 5, 3).strip(),
            organisation_id=msg.value(prt, 8, 10).strip() or msg.value(prt, 8, 3).strip(),
            organisation_name=msg.value(prt, 8, 1).strip(),
            device=msg.value(prt, 10, 1).strip(),
        )
    return None


def pid3_repetitions(msg: Message) -> list[Cx]:
    pid = msg.first("PID")
    if pid is None:
        raise ParseError("PID segment is missing", location="PID", reason="required")
    out: list[Cx] = []
    for rep in msg.repetitions(pid.field(3)):
        out.append(
            Cx(
                value=msg.component(rep, 1).strip(),
                namespace=msg.component(rep, 4, 1).strip(),
                oid=msg.component(rep, 4, 2).strip(),
                type_code=msg.component(rep, 5).strip(),
            )
        )
    return out


def pid32_values(msg: Message) -> list[str]:
    pid = msg.first("PID")
    if pid is None:
        return []
    return [msg.component(rep, 1) for rep in msg.repetitions(pid.field(32))]


def _confidentiality(cda_codes: tuple[Code, ...], flags: Flags) -> tuple[Code, ...]:
    codes = list(cda_codes)
    extra: list[str] = []
    if flags.masque_ps:
        extra.append(MASQUE_PS)
    if flags.invisible_patient:
        extra.append(INVISIBLE_PATIENT)
    if flags.invisible_rep_legaux or flags.connexion_secrete:
        extra.append(INVISIBLE_REPRESENTANTS_LEGAUX)
    present = {c.code for c in codes}
    codes.extend(confidentiality_code(code) for code in extra if code not in present)
    return tuple(codes)


def map_hl7_message(
    msg: Message,
    *,
    test_environment: bool,
    now: datetime,
    provenance: Provenance,
    limits: CdaLimits = DEFAULT_LIMITS,
    read: tuple[Header, Classified] | None = None,
) -> list[Document]:
    """Map an already decoded ORU/MDM message to its documents (usually one; ORU may carry N1 + N3).

    The volet rules (message type/event, ORC-1/OBX-11/trigger coherence, MetaDMPMSS flags in their
    fixed order, OBX-3 = OBR-4, PRT sender when DESTDMP=Y, type in the DMP list) are those of the ACK
    path (:func:`passerelle.mappings.hl7v2.volet.classify`), so the worker and the preview apply
    exactly what intake accepted. ``read``: the message's header and classification as the ACK path
    made them in the same ``test_environment`` (stricter than this re-classification: MSH-11 and the
    embedded XML checked), to skip making them again.
    """
    if read is None:
        header = read_header(msg)
        classified = classify(msg, header, test_environment=test_environment, check_documents=False)
    else:
        header, classified = read
    if classified.kind is MessageKind.LAB_RESULTS:
        raise MappingError("discrete lab results carry no document: CR-BIO generation needed", reason="lab")
    if classified.kind not in (MessageKind.ORU_DOCUMENT, MessageKind.MDM_DOCUMENT) or classified.action is None:
        raise UnsupportedMessageError(
            "only ORU^R01 and MDM^T02/T10/T04 carry documents", location="MSH^1^9", reason="unsupported_event"
        )
    action = classified.action
    flags = classified.flags or Flags()
    prov = provenance.model_copy(update={"sender": header.sender, "message_id": header.control_id})
    sb = submission_author(msg)
    pid3 = pid3_repetitions(msg)
    pid32 = pid32_values(msg)
    txa = msg.first("TXA")
    documents: list[Document] = []
    for emb in classified.documents:
        location = f"OBX^{emb.obx_index}^5^5"
        content = decode_base64(emb.base64, location=location)
        try:
            root = parse_cda(content, limits)
        except PasserelleError as exc:
            raise type(exc)(
                f"embedded document (OBX {emb.obx_index}): {exc.message}", location=location, reason=exc.reason
            ) from exc
        doc = document_from_cda(root, content, now=now, provenance=prov)
        if emb.type_code.code != doc.type_code.code:
            raise ValidationError(
                "OBX-3 document type differs from the CDA code", location=f"OBX^{emb.obx_index}^3", reason="type"
            )
        replaces = ""
        if action is Action.REPLACE:
            replaces = doc.replaces or (_ei(msg, txa, 13) if txa is not None else "")
        elif action is Action.DELETE:
            replaces = doc.unique_id
        patient = qualify_hl7_patient(pid3, pid32, doc.patient, test_environment=test_environment)
        documents.append(
            doc.model_copy(
                update={
                    "action": action,
                    "replaces": replaces,
                    "patient": patient,
                    "confidentiality": _confidentiality(doc.confidentiality, flags),
                    "flags": flags,
                    "submission_author": sb,
                }
            )
        )
    return documents


def map_hl7_documents(
    raw: bytes,
    *,
    sender_charset: str | None,
    test_environment: bool,
    now: datetime,
    provenance: Provenance,
    limits: CdaLimits = DEFAULT_LIMITS,
) -> list[Document]:
    """Decode raw HL7v2 bytes (frame payload) and map every embedded document."""
    msg = decode_message(raw, fallback_charset=sender_charset)
    return map_hl7_message(msg, test_environment=test_environment, now=now, provenance=provenance, limits=limits)


def map_hl7_document(
    raw: bytes,
    *,
    sender_charset: str | None,
    test_environment: bool,
    now: datetime,
    provenance: Provenance,
) -> Document:
    """The single document of an ORU/MDM message; a message with several renderings raises MappingError."""
    docs = map_hl7_documents(
        raw, sender_charset=sender_charset, test_environment=test_environment, now=now, provenance=provenance
    )
    if len(docs) != 1:
        raise MappingError(f"message carries {len(docs)} documents; use map_hl7_documents", reason="several_documents")
    return docs[0]
