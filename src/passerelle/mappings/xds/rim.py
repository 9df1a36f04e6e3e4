"""Small builders for ebRIM 3.0 elements and the HL7v2-style values XDS slots carry (CX, XCN, XON, DTM).

Element order follows ``rim.xsd``: Slot*, Name?, Description?, VersionInfo?, Classification*,
ExternalIdentifier*. Every element is namespace-prefixed (``rim:``), never in a default namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from lxml import etree

from passerelle.mappings.document import Author, Code, Patient
from passerelle.mappings.xds.ns import NON_HUMAN_SYSTEM, NSMAP, PS_AUTHORITY, RIM, STRUCTURE_AUTHORITY, XML_NS

#: Namespace of every UUID 5 / ``2.25`` OID derived here (fixed forever: changing it changes every id).
XDS_UUID_NAMESPACE = uuid.UUID("0b7d6c52-0f3e-5a51-8f6e-6d2c9a7b4e31")
#: ebRIM LongName: the longest slot value or attribute a registry must accept.
LONG_NAME = 256


def q(tag: str) -> str:
    return f"{{{RIM}}}{tag}"


def derive_oid(seed: str) -> str:
    """A ``2.25`` OID (ITU-T X.667) derived from ``seed``: the same seed gives the same identifier."""
    return f"2.25.{uuid.uuid5(XDS_UUID_NAMESPACE, seed).int}"


def dtm(value: datetime) -> str:
    """XDS DTM in UTC, to the second (``YYYYMMDDhhmmss``). A naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def patient_cx(patient: Patient) -> str:
    """``<INS>^^^&<INS OID>&ISO^NH``: the XDS patientId of a qualified INS."""
    return f"{patient.ins}^^^&{patient.ins_oid}&ISO^NH"


def source_patient_cx(patient: Patient) -> str:
    """The local identifier (IPP) when known, else the INS."""
    if patient.local_id and patient.local_id_oid:
        return f"{_esc(patient.local_id)}^^^&{patient.local_id_oid}&ISO^PI"
    return patient_cx(patient)


def source_patient_info(patient: Patient) -> list[str]:
    """``PID-5|…``, ``PID-7|…``, ``PID-8|…`` lines from the traits the document carries."""
    lines = []
    if patient.family or patient.given:
        lines.append(f"PID-5|{_esc(patient.family)}^{_esc(patient.given)}^^^^^L")
    if patient.birth_date:
        lines.append(f"PID-7|{patient.birth_date}")
    if patient.sex:
        lines.append(f"PID-8|{patient.sex}")
    return lines


def device_person_id(author: Author, structure_id: str) -> str:
    """IdNat_PS of type 3 (structure-internal identifier) for a non-human author: ``3<FINESS>/<device>``."""
    base = structure_id[1:] if structure_id.startswith("1") else structure_id
    return f"3{base}/{author.device or 'passerelle'}"


def author_xcn(author: Author, structure_id: str) -> str:
    """authorPerson / legalAuthenticator: ``<IdNat_PS>^<family>^<given>^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS``."""
    if author.person_id:
        ident, family, given = author.person_id, author.family, author.given
    else:
        ident, family, given = device_person_id(author, structure_id), author.device or "passerelle", ""
    return f"{_esc(ident)}^{_esc(family)}^{_esc(given)}^^^^^^&{PS_AUTHORITY}&ISO^D^^^IDNPS"


def institution_xon(name: str, structure_id: str) -> str:
    """authorInstitution: ``<name>^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<IdNat_Struct>``."""
    return f"{_esc(name)}^^^^^&{STRUCTURE_AUTHORITY}&ISO^IDNST^^^{_esc(structure_id)}"


def specialty_cwe(author: Author) -> str:
    """authorSpecialty ``code^display^system``; a non-human author is ``DISPOSITIF`` (TRE_A00)."""
    if author.role is not None:
        return f"{_esc(author.role.code)}^{_esc(author.role.display)}^{author.role.system}"
    return f"DISPOSITIF^Dispositif^{NON_HUMAN_SYSTEM}"


def _esc(text: str) -> str:
    """HL7v2 escaping of the component separators a name may contain."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )


# --- elements ----------------------------------------------------------------------------------------


def slot(parent: etree._Element, name: str, values: Iterable[str]) -> etree._Element:
    element = etree.SubElement(parent, q("Slot"), name=name)
    value_list = etree.SubElement(element, q("ValueList"))
    for value in values:
        if len(value) > LONG_NAME:
            raise ValueError(f"slot {name}: value longer than {LONG_NAME} characters")
        etree.SubElement(value_list, q("Value")).text = value
    return element


def localized(parent: etree._Element, tag: str, text: str) -> etree._Element:
    """``<rim:Name>`` / ``<rim:Description>`` with one ``LocalizedString`` (``charset="UTF8" xml:lang="FR"``)."""
    element = etree.SubElement(parent, q(tag))
    string = etree.SubElement(element, q("LocalizedString"), charset="UTF8", value=text[:LONG_NAME])
    string.set(f"{{{XML_NS}}}lang", "FR")
    return element


def classification(
    parent: etree._Element, scheme: str, object_id: str, ident: str, code: tuple[str, str, str] | Code
) -> etree._Element:
    """A coded classification: ``nodeRepresentation`` = code, slot ``codingScheme`` = system, Name = display."""
    value, system, display = (code.code, code.system, code.display) if isinstance(code, Code) else code
    element = etree.SubElement(
        parent,
        q("Classification"),
        classificationScheme=scheme,
        classifiedObject=object_id,
        id=ident,
        nodeRepresentation=value,
    )
    slot(element, "codingScheme", [system])
    localized(element, "Name", display or value)
    return element


def author_classification(
    parent: etree._Element, scheme: str, object_id: str, ident: str, slots: list[tuple[str, list[str]]]
) -> etree._Element:
    """The author classification (no node: its content is in slots), ``nodeRepresentation=""``."""
    element = etree.SubElement(
        parent, q("Classification"), classificationScheme=scheme, classifiedObject=object_id, id=ident
    )
    element.set("nodeRepresentation", "")
    for name, values in slots:
        if values:
            slot(element, name, values)
    return element


def external_identifier(
    parent: etree._Element, scheme: str, object_id: str, ident: str, value: str, name: str
) -> etree._Element:
    element = etree.SubElement(
        parent, q("ExternalIdentifier"), id=ident, identificationScheme=scheme, registryObject=object_id, value=value
    )
    localized(element, "Name", name)
    return element


def association(
    parent: etree._Element, ident: str, kind: str, source: str, target: str, slots: list[tuple[str, list[str]]]
) -> etree._Element:
    element = etree.SubElement(
        parent, q("Association"), associationType=kind, id=ident, sourceObject=source, targetObject=target
    )
    for name, values in slots:
        slot(element, name, values)
    return element


def element(tag: str, ns: str = RIM, **attrs: str) -> etree._Element:
    """A root element in ``ns`` with every prefix of :data:`NSMAP` declared once."""
    return etree.Element(f"{{{ns}}}{tag}", attrs, nsmap=NSMAP)
