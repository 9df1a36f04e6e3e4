"""TD0.2, the DMP's existence and authorisation test: ``PRPA_IN201307UV02`` in, ``PRPA_IN201308UV02`` out.

The answer follows the sandbox space's state (docs/sandbox.md): ``INEXISTANT`` -> ``NF``; ``ACTIF`` /
``FERME`` -> ``OK`` with patient status ``active`` / ``terminated``; the authorisation is the one set
through the admin API, else ``INTERDIT`` when the VIHF's person or structure is blocked, else ``VALIDE``.
Opposition to feeding is not part of TD0.2 (the platform does not return it).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from passerelle.sandbox.dmp.common import HL7, XSI, q
from passerelle.sandbox.store import PatientState

DMP_DEVICE = "1.2.250.1.213.4.1.1.1"
INS_ROOT = re.compile(r"^1\.2\.250\.1\.213\.1\.4\.[0-9]+$")


@dataclass(frozen=True)
class Query:
    """What a TD0.2 request asks: the INS (root, extension) and the request's own id."""

    ins_root: str | None
    ins: str | None
    message_root: str
    message_extension: str
    sender_root: str

    @property
    def patient_id(self) -> str:
        return f"{self.ins}^^^&{self.ins_root}&ISO^NH"

    @property
    def valid(self) -> bool:
        return bool(self.ins) and bool(INS_ROOT.match(self.ins_root or ""))


def read_query(body: etree._Element) -> Query:
    value = body.find(
        f".//{q(HL7, 'queryByParameter')}/{q(HL7, 'parameterList')}/{q(HL7, 'patientIdentifier')}/{q(HL7, 'value')}"
    )
    ident = body.find(q(HL7, "id"))
    sender = body.find(f"{q(HL7, 'sender')}/{q(HL7, 'device')}/{q(HL7, 'id')}")
    return Query(
        ins_root=value.get("root") if value is not None else None,
        ins=value.get("extension") if value is not None else None,
        message_root=str(ident.get("root") or "") if ident is not None else "",
        message_extension=str(ident.get("extension") or "") if ident is not None else "",
        sender_root=str(sender.get("root") or "") if sender is not None else "",
    )


def _el(parent: etree._Element, name: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, q(HL7, name), {k.replace("_", ""): v for k, v in attributes.items()})


def answer(query: Query, state: PatientState | None, authorisation: str | None) -> etree._Element:
    """The ``PRPA_IN201308UV02``; ``state`` None means the request was refused (``AE``)."""
    root = etree.Element(q(HL7, "PRPA_IN201308UV02"), nsmap={None: HL7, "xsi": XSI}, ITSVersion="XML_1.0")  # type: ignore[dict-item]
    _el(root, "id", root=DMP_DEVICE, extension=str(uuid.uuid4()))
    _el(root, "creationTime", value=datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    _el(root, "interactionId", root="2.16.840.1.113883.1.6", extension="PRPA_IN201308UV02")
    _el(root, "processingCode", code="P")
    _el(root, "processingModeCode", code="T")
    _el(root, "acceptAckCode", code="NE")
    _el(
        _el(_el(root, "receiver", typeCode="RCV"), "device", classCode="DEV", determinerCode="INSTANCE"),
        "id",
        root=query.sender_root or "0",
    )
    sender = _el(_el(root, "sender", typeCode="SND"), "device", classCode="DEV", determinerCode="INSTANCE")
    _el(sender, "id", root=DMP_DEVICE)
    if authorisation is not None:
        line = _el(root, "attentionLine")
        _el(line, "keyWordText", code="AUTORISATION", codeSystem="1.2.250.1.213.4.1.2.6.1")
        value = _el(line, "value", code=authorisation, codeSystem="1.2.250.1.213.4.1.2.6.2")
        value.set(q(XSI, "type"), "CV")
    ack = _el(root, "acknowledgement", typeCode="AA" if state is not None else "AE")
    _el(_el(ack, "targetMessage"), "id", root=query.message_root or "0", extension=query.message_extension)
    if state is None:
        detail = _el(ack, "acknowledgementDetail", typeCode="E")
        _el(detail, "code", code="DMPInvalidRequest", codeSystem="1.2.250.1.213.4.1.2.1")
        _el(detail, "text").text = "the query needs a patientIdentifier with an INS root"
        return root
    control = _el(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    found = state.status != "INEXISTANT"
    if found:
        event = _el(_el(control, "subject", typeCode="SUBJ"), "registrationEvent", classCode="REG", moodCode="EVN")
        _el(event, "statusCode", code="active")
        patient = _el(_el(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
        _el(patient, "id", root=str(query.ins_root), extension=str(query.ins))
        _el(patient, "statusCode", code="terminated" if state.status == "FERME" else "active")
    query_ack = _el(control, "queryAck")
    _el(query_ack, "queryResponseCode", code="OK" if found else "NF")
    return root


def authorisation_of(state: PatientState, subject: str, structure: str) -> str | None:
    if state.status == "INEXISTANT":
        return None
    if state.authorisation:
        return state.authorisation
    return "INTERDIT" if {subject, structure} & set(state.blocked_authors) else "VALIDE"
