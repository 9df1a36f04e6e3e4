"""The one CDA R2 writer: element helpers, codes, templates, identifiers, timestamps and the header
blocks of the CI-SIS structuration minimale (docs/interop-reference.md, "CDA header").

Every document Passerelle generates (CR-BIO from lab results, IMG-CR-IMG from a DICOM SR, the
synthetic samples) is built with these functions; each generator only adds its own body and the
header parts its volet specifies (serviceEvent codes, participants). The header is described with
plain values (:class:`Header`, :class:`RecordTarget`, :class:`Professional`, :class:`Organisation`)
so the generators share the element order the schema and the schematrons check.

Pure: no clock (times are passed in), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree
from pydantic import BaseModel, ConfigDict

from passerelle.mappings.cda.safe_xml import HL7_NS
from passerelle.mappings.document import LOINC, PS_ID_OID, STRUCTURE_ID_OID, Action, Code, Lineage, confidentiality_code
from passerelle.mappings.hl7time import cda_timestamp

XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
#: Namespaces a generator may use through a prefix in :func:`el` tags (``lab:statusCode``).
NAMESPACES = {"xsi": XSI_NS, "lab": "urn:oid:1.3.6.1.4.1.19376.1.3.2", "ps3-20": "urn:dicom-org:ps3-20"}
GENDER_SYSTEM = "2.16.840.1.113883.5.1"
_GENDER = {"M": "Masculin", "F": "Féminin", "U": "Inconnu"}
#: HL7 France realm + CI-SIS structuration minimale: the first two templateIds of every French CDA.
FRENCH_HEADER_TEMPLATES = ("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1")


# --- elements ------------------------------------------------------------------------------------


def _qname(tag: str) -> str:
    prefix, _, local = tag.rpartition(":")
    return f"{{{NAMESPACES[prefix] if prefix else HL7_NS}}}{local}"


def el(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """Append ``<tag attrs>text</tag>`` to ``parent`` (HL7 v3 namespace unless ``prefix:tag``)."""
    element = etree.SubElement(parent, _qname(tag), attrs)
    if text is not None:
        element.text = text
    return element


def xsi_type(element: etree._Element, value: str) -> etree._Element:
    element.set(f"{{{XSI_NS}}}type", value)
    return element


def code(parent: etree._Element, tag: str, value: Code, **extra: str) -> etree._Element:
    """A coded element (CD/CE/CV): code, codeSystem, displayName, ``codeSystemName`` LOINC for LOINC."""
    attrs = {"code": value.code, "codeSystem": value.system}
    if value.display:
        attrs["displayName"] = value.display
    if value.system == LOINC:
        attrs["codeSystemName"] = "LOINC"
    attrs.update(extra)
    return el(parent, tag, **attrs)


def templates(parent: etree._Element, *roots: str) -> None:
    for root in roots:
        el(parent, "templateId", root=root)


def ts(value: datetime) -> str:
    """CDA TS with seconds and UTC offset (``20240104113000+0100``)."""
    return cda_timestamp(value)


def time(parent: etree._Element, tag: str, value: datetime) -> etree._Element:
    return el(parent, tag, value=ts(value))


def span(parent: etree._Element, low: datetime, high: datetime | None = None) -> etree._Element:
    """``<effectiveTime><low/>[<high/>]</effectiveTime>``."""
    interval = el(parent, "effectiveTime")
    time(interval, "low", low)
    if high is not None:
        time(interval, "high", high)
    return interval


def identifier(parent: etree._Element, root: str, extension: str = "", **extra: str) -> etree._Element:
    """``<id root extension/>``; an empty ``root`` writes ``nullFlavor="UNK"``."""
    if not root:
        return el(parent, "id", nullFlavor="UNK")
    return el(parent, "id", root=root, extension=extension, **extra) if extension else el(parent, "id", root=root)


def new_document(*prefixes: str) -> etree._Element:
    """An empty ``ClinicalDocument`` declaring the HL7 v3 default namespace, ``xsi`` and ``prefixes``."""
    nsmap: dict[str | None, str] = {None: HL7_NS}
    nsmap.update({p: NAMESPACES[p] for p in ("xsi", *prefixes)})
    return etree.Element(_qname("ClinicalDocument"), nsmap=nsmap)  # type: ignore[arg-type]  # lxml takes None


def serialise(root: etree._Element, *, pretty: bool = False) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=pretty))


# --- header values --------------------------------------------------------------------------------


class Address(BaseModel):
    """A structured address (the CI-SIS address template does not mix street lines and parts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    house_number: str = ""
    street: str = ""  # street name with its type ("Rue Frédéric Bastia")
    postal_code: str = ""
    city: str = ""
    country: str = ""

    @property
    def empty(self) -> bool:
        return not (self.street or self.postal_code or self.city)

    @property
    def line(self) -> str:
        return " ".join(x for x in (self.house_number, self.street) if x)


@dataclass(frozen=True)
class Organisation:
    """A structure: IdNat_Struct under 1.2.250.1.71.4.2.2 (``""`` → ``nullFlavor``), name, contacts.

    ``telecom``/``address`` None leave the element out; an empty value writes ``nullFlavor="UNK"``.
    ``other_ids`` are (root, extension, assigning authority name), e.g. a COFRAC accreditation.
    """

    id: str = ""
    name: str = ""
    other_ids: tuple[tuple[str, str, str], ...] = ()
    telecom: tuple[str, ...] | None = None
    address: Address | None = None
    practice_setting: Code | None = None  # standardIndustryClassCode (representedOrganization only)


@dataclass(frozen=True)
class Professional:
    """A health professional: IdNat_PS under 1.2.250.1.71.4.2.1 (``""`` → ``nullFlavor``)."""

    id: str = ""
    family: str = ""
    given: str = ""
    prefix: str = ""
    suffix: str = ""
    role: Code | None = None  # profession / specialty (TRE_G15)
    address: Address | None = None
    telecom: tuple[str, ...] | None = None
    organisation: Organisation | None = None


@dataclass(frozen=True)
class Birthplace:
    county: str = ""  # INSEE COG code of the birth commune ("" → nullFlavor UNK)
    city: str = ""


@dataclass(frozen=True)
class RecordTarget:
    """The patient with the INS traits: ``ids`` (root, extension), INS first."""

    ids: tuple[tuple[str, str], ...]
    birth_family: str
    birth_given_names: str  # every birth given name, space separated
    first_birth_given: str
    sex: str  # M / F / U
    birth_date: str  # YYYYMMDD ("" → nullFlavor UNK)
    used_family: str = ""
    used_given: str = ""
    address: Address | None = None
    telecom: tuple[str, ...] | None = None
    birthplace: Birthplace | None = None


@dataclass(frozen=True)
class Header:
    """The identification part of the header, in schema order after ``realmCode``/``typeId``."""

    templates: tuple[str, ...]  # after the two French header templates
    lineage: Lineage
    type_code: Code
    title: str
    created: datetime
    confidentiality: str = "N"
    language: str = "fr-FR"
    versioned_templates: tuple[tuple[str, str], ...] = field(default=())  # (root, extension)


# --- header blocks ---------------------------------------------------------------------------------


def header(doc: etree._Element, spec: Header) -> None:
    """realmCode, typeId, templateIds, id, code, title, effectiveTime, confidentialityCode,
    languageCode, setId, versionNumber."""
    el(doc, "realmCode", code="FR")
    el(doc, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    templates(doc, *FRENCH_HEADER_TEMPLATES, *spec.templates)
    for root, extension in spec.versioned_templates:
        el(doc, "templateId", root=root, extension=extension)
    el(doc, "id", root=spec.lineage.unique_id)
    code(doc, "code", spec.type_code)
    el(doc, "title", spec.title)
    time(doc, "effectiveTime", spec.created)
    code(doc, "confidentialityCode", confidentiality_code(spec.confidentiality))
    el(doc, "languageCode", code=spec.language)
    el(doc, "setId", root=spec.lineage.set_id)
    el(doc, "versionNumber", value=str(spec.lineage.version))


def address(parent: etree._Element, value: Address | None) -> None:
    if value is None:
        return
    if value.empty:
        el(parent, "addr", nullFlavor="UNK")
        return
    addr = el(parent, "addr")
    for tag, text in (
        ("houseNumber", value.house_number),
        ("streetName", value.street),
        ("postalCode", value.postal_code),
        ("city", value.city),
        ("country", value.country),
    ):
        if text:
            el(addr, tag, text)


def telecoms(parent: etree._Element, values: tuple[str, ...] | None) -> None:
    if values is None:
        return
    if not values:
        el(parent, "telecom", nullFlavor="UNK")
    for value in values:
        el(parent, "telecom", value=value, use="WP")


def person_name(parent: etree._Element, person: Professional) -> None:
    name = el(parent, "name")
    for tag, text in (("prefix", person.prefix), ("given", person.given)):
        if text:
            el(name, tag, text)
    el(name, "family", person.family)
    if person.suffix:
        el(name, "suffix", person.suffix)


def organisation(parent: etree._Element, tag: str, org: Organisation) -> etree._Element:
    """``tag`` (representedOrganization, representedCustodianOrganization...): id, name, telecom, addr."""
    element = el(parent, tag)
    identifier(element, STRUCTURE_ID_OID if org.id else "", org.id)
    for root, extension, authority in org.other_ids:
        el(element, "id", root=root, extension=extension, assigningAuthorityName=authority)
    el(element, "name", org.name)
    telecoms(element, org.telecom)
    address(element, org.address)
    if org.practice_setting is not None:
        code(element, "standardIndustryClassCode", org.practice_setting)
    return element


def assigned(
    parent: etree._Element, tag: str, person: Professional, *, person_tag: str = "assignedPerson", **attrs: str
) -> None:
    """assignedAuthor / assignedEntity / associatedEntity: id, code, addr, telecom, person, organisation."""
    entity = el(parent, tag, **attrs)
    identifier(entity, PS_ID_OID if person.id else "", person.id)
    if person.role is not None:
        code(entity, "code", person.role)
    address(entity, person.address)
    telecoms(entity, person.telecom)
    person_name(el(entity, person_tag), person)
    if person.organisation is not None:
        organisation(entity, "representedOrganization", person.organisation)


def record_target(doc: etree._Element, patient: RecordTarget) -> None:
    role = el(el(doc, "recordTarget"), "patientRole")
    for root, extension in patient.ids:
        el(role, "id", root=root, extension=extension)
    address(role, patient.address)
    telecoms(role, patient.telecom)
    person = el(role, "patient", classCode="PSN")
    name = el(person, "name")
    el(name, "family", patient.birth_family, qualifier="BR")
    el(name, "given", patient.birth_given_names)
    el(name, "given", patient.first_birth_given, qualifier="BR")
    if patient.used_family:
        el(name, "family", patient.used_family, qualifier="CL")
    if patient.used_given:
        el(name, "given", patient.used_given, qualifier="CL")
    sex = patient.sex if patient.sex in _GENDER else "U"
    el(person, "administrativeGenderCode", code=sex, displayName=_GENDER[sex], codeSystem=GENDER_SYSTEM)
    if patient.birth_date:
        el(person, "birthTime", value=patient.birth_date)
    else:
        el(person, "birthTime", nullFlavor="UNK")
    if patient.birthplace is not None:
        _birthplace(person, patient.birthplace)


def _birthplace(person: etree._Element, place: Birthplace) -> None:
    addr = el(el(el(person, "birthplace"), "place"), "addr")
    if place.county:
        el(addr, "county", place.county)
    else:
        el(addr, "county", nullFlavor="UNK")
    if place.city:
        el(addr, "city", place.city)


def author(doc: etree._Element, when: datetime, person: Professional) -> None:
    block = el(doc, "author")
    time(block, "time", when)
    assigned(block, "assignedAuthor", person)


def custodian(doc: etree._Element, org: Organisation) -> None:
    holder = el(el(doc, "custodian"), "assignedCustodian")
    organisation(holder, "representedCustodianOrganization", org)


def legal_authenticator(doc: etree._Element, when: datetime, person: Professional) -> None:
    block = el(doc, "legalAuthenticator")
    time(block, "time", when)
    el(block, "signatureCode", code="S")
    assigned(block, "assignedEntity", person)


def parties(
    doc: etree._Element,
    patient: RecordTarget,
    written_by: Professional,
    keeper: Organisation,
    signed: datetime,
    *,
    signer: Professional | None = None,
) -> None:
    """Who the document is about, who wrote it, who keeps it and who signed it, in schema order:
    recordTarget, author, custodian, legalAuthenticator (``signer`` defaults to the author); the
    author and the signature share the time ``signed``."""
    record_target(doc, patient)
    author(doc, signed, written_by)
    custodian(doc, keeper)
    legal_authenticator(doc, signed, signer or written_by)


def service_event(doc: etree._Element, **attrs: str) -> etree._Element:
    """``documentationOf/serviceEvent``: the generator adds its id, code and times."""
    return el(el(doc, "documentationOf"), "serviceEvent", **attrs)


def performer(
    event: etree._Element, person: Professional, *, template: str = "", until: datetime | None = None
) -> None:
    block = el(event, "performer", typeCode="PRF")
    if template:
        templates(block, template)
    if until is not None:
        time(el(block, "time"), "high", until)
    assigned(block, "assignedEntity", person)


def related_document(doc: etree._Element, lineage: Lineage) -> None:
    """``relatedDocument typeCode="RPLC"`` naming the version a replacement replaces (nothing otherwise)."""
    if lineage.action is Action.REPLACE:
        related = el(doc, "relatedDocument", typeCode="RPLC")
        el(el(related, "parentDocument"), "id", root=lineage.replaces)


def encompassing_encounter(
    doc: etree._Element, start: datetime, facility: Code | None, *, responsible: Professional | None = None
) -> None:
    """``componentOf/encompassingEncounter``: start time, responsible party, healthCareFacility code."""
    encounter = el(el(doc, "componentOf"), "encompassingEncounter")
    span(encounter, start)
    if responsible is not None:
        assigned(el(encounter, "responsibleParty"), "assignedEntity", responsible)
    place = el(el(encounter, "location"), "healthCareFacility")
    if facility is not None:
        code(place, "code", facility)
    else:
        el(place, "code", nullFlavor="UNK")


def paragraphs(section: etree._Element, texts: Iterable[str], empty: str = "Néant") -> None:
    """A section narrative: one ``<paragraph>`` per text, line breaks as ``<br/>``."""
    body = el(section, "text")
    for text in list(texts) or [empty]:
        lines = text.splitlines() or [""]
        para = el(body, "paragraph", lines[0])
        for line in lines[1:]:
            el(para, "br").tail = line
