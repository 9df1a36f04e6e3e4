"""TD0.2 (test d'existence et autorisation): the HL7v3 ``PRPA_IN201307UV02`` query and the reading of
its ``PRPA_IN201308UV02`` answer (DMP exists? open or closed? this professional's authorisation).

TD0.2 does not carry the patient's opposition to feeding: the sender manages it (PAM ZFA-9).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from passerelle.mappings.document import Patient
from passerelle.mappings.xds.ns import HL7V3, XSI, default_ns
from passerelle.mappings.xds.rim import dtm

DMP_DEVICE_OID = "1.2.250.1.213.4.1.1.1"
REASON_SYSTEM = "1.2.250.1.213.1.1.4.11"
AUTHORISATION_SYSTEM = "1.2.250.1.213.4.1.2.6.1"
ACTION = "urn:hl7-org:v3:PRPA_IN201307UV02"
ANSWER_ACTION = "urn:hl7-org:v3:PRPA_IN201308UV02"

_H = f"{{{HL7V3}}}"


def _sub(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, f"{_H}{tag}", attrs)


def _device(parent: etree._Element, role: str, oid: str, name: str) -> None:
    holder = _sub(parent, role, typeCode="RCV" if role == "receiver" else "SND")
    device = _sub(holder, "device", classCode="DEV", determinerCode="INSTANCE")
    _sub(device, "id", root=oid)
    _sub(device, "softwareName").text = name


def build_query(
    patient: Patient, *, sender_oid: str, software_name: str, message_id: str, query_id: str, now: datetime
) -> etree._Element:
    """``PRPA_IN201307UV02`` asking whether ``patient``'s DMP exists (reason ``TEST_EXST``).
    ``message_id`` and ``query_id`` are fresh UUIDs chosen by the caller."""
    root = etree.Element(f"{_H}PRPA_IN201307UV02", {"ITSVersion": "XML_1.0"}, nsmap=default_ns(HL7V3, xsi=XSI))
    _sub(root, "id", root=sender_oid, extension=message_id)
    _sub(root, "creationTime", value=dtm(now))
    _sub(root, "interactionId", root="2.16.840.1.113883.1.6", extension="PRPA_IN201307UV02")
    _sub(root, "processingCode", code="P")
    _sub(root, "processingModeCode", code="T")
    _sub(root, "acceptAckCode", code="AL")
    _device(root, "receiver", DMP_DEVICE_OID, "DMP")
    _device(root, "sender", sender_oid, software_name)
    _sub(root, "attentionLine").set(f"{{{XSI}}}nil", "true")
    act = _sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _sub(act, "reasonCode", code="TEST_EXST", codeSystem=REASON_SYSTEM)
    query = _sub(act, "queryByParameter")
    _sub(query, "queryId", root=sender_oid, extension=query_id)
    _sub(query, "statusCode", code="new")
    parameter = _sub(_sub(query, "parameterList"), "patientIdentifier")
    _sub(parameter, "value", root=patient.ins_oid, extension=patient.ins)
    _sub(parameter, "semanticsText").text = "Patient.id"
    return root


@dataclass(frozen=True)
class Td02Answer:
    """What TD0.2 said. ``accepted`` false means an ``AE``/``AR`` acknowledgement with ``error_code``."""

    accepted: bool
    error_code: str = ""
    found: bool = False
    closed: bool = False
    authorisation: str = ""  # VALIDE | EXPIRE | NON_EXISTE | INTERDIT | "" (not given)


class MalformedTd02Error(ValueError):
    """The answer is not a readable PRPA_IN201308UV02."""


def parse_answer(root: etree._Element) -> Td02Answer:
    """Read a ``PRPA_IN201308UV02`` element (already parsed with a hardened parser)."""
    if root.tag != f"{_H}PRPA_IN201308UV02":
        raise MalformedTd02Error("not a PRPA_IN201308UV02 answer")
    ack = root.find(f"{_H}acknowledgement")
    ack_code = ack.get("typeCode", "") if ack is not None else ""
    if ack_code != "AA":
        detail = root.find(f"{_H}acknowledgement/{_H}acknowledgementDetail/{_H}code")
        code = detail.get("code", "") if detail is not None else ""
        return Td02Answer(accepted=False, error_code=code or ack_code or "unknown")
    response = root.find(f".//{_H}queryAck/{_H}queryResponseCode")
    if response is None:
        raise MalformedTd02Error("no queryAck/queryResponseCode")
    found = response.get("code") == "OK"
    status = root.find(f".//{_H}registrationEvent/{_H}subject1/{_H}patient/{_H}statusCode")
    closed = found and status is not None and status.get("code") == "terminated"
    return Td02Answer(accepted=True, found=found, closed=closed, authorisation=_authorisation(root))


def _authorisation(root: etree._Element) -> str:
    for line in root.iter(f"{_H}attentionLine"):
        key = line.find(f"{_H}keyWordText")
        if key is not None and key.get("code") == "AUTORISATION":
            value = line.find(f"{_H}value")
            return value.get("code", "") if value is not None else ""
    return ""
