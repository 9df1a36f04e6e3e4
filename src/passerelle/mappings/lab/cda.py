"""LabReport → CDA R2 CR-BIO 2024.01 (volet BIO-CR-BIO, XD-LAB based; dmp-interop.md §4.1 and §4.3).

Layout follows the ANS example ``BIO-CR-BIO_2024.01_TSH_1.xml``: structuration minimale header with the
XD-LAB and CR-BIO templateIds, one FR-CR-BIO-Chapitre section per chapter, one FR-CR-BIO-Sous-Chapitre
section per battery with its narrative table and its FR-Resultats-examens-de-biologie-medicale entry
(act → specimen procedure + battery organizer → observations), and the mandatory FR-Document-PDF-copie
section carrying the PDF rendering. Pure: no clock, no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from lxml import etree

from passerelle.mappings.codes import interpretation_display
from passerelle.mappings.document import PS_ID_OID, STRUCTURE_ID_OID, Action, Code
from passerelle.mappings.lab.ids import sub_id
from passerelle.mappings.lab.model import (
    LOINC_SYSTEM,
    Address,
    Battery,
    Laboratory,
    LabReport,
    LabResult,
    Person,
    ResultStatus,
    Specimen,
    ValueKind,
)
from passerelle.mappings.lab.pdf import format_interpretation, format_range, format_value

V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
LAB = "urn:oid:1.3.6.1.4.1.19376.1.3.2"
NSMAP = {None: V3, "lab": LAB, "xsi": XSI}

TYPE_CODE = Code(code="11502-2", system=LOINC_SYSTEM, display="CR d'examens biologiques")
TITLE = "Compte rendu d'examens biologiques"
HEADER_TEMPLATES = (
    "2.16.840.1.113883.2.8.2.1",  # HL7 France
    "1.2.250.1.213.1.1.1.1",  # CI-SIS structuration minimale
    "1.3.6.1.4.1.19376.1.3.3",  # IHE PaLM XD-LAB
    "1.2.250.1.213.1.1.1.55",  # CI-SIS CR-BIO
)
INTERPRETATION_SYSTEM = "2.16.840.1.113883.5.83"
CONFIDENTIALITY_SYSTEM = "2.16.840.1.113883.5.25"
_CONFIDENTIALITY = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}
_GENDER = {"M": "Masculin", "F": "Féminin", "U": "Inconnu"}


def _q(tag: str) -> str:
    return f"{{{V3}}}{tag}"


def _el(parent: etree._Element, tag: str, attrib: dict[str, str] | None = None, text: str = "") -> etree._Element:
    el = etree.SubElement(parent, _q(tag), attrib or {})
    if text:
        el.text = text
    return el


def _xsi_type(el: etree._Element, value: str) -> None:
    el.set(f"{{{XSI}}}type", value)


def ts(value: datetime) -> str:
    """CDA TS with seconds and UTC offset (``20240104113000+0100``)."""
    return value.strftime("%Y%m%d%H%M%S%z")


def _num(value: Decimal) -> str:
    return format(value, "f")


def _code(parent: etree._Element, tag: str, code: Code, **extra: str) -> etree._Element:
    attrib = {"code": code.code, "codeSystem": code.system}
    if code.display:
        attrib["displayName"] = code.display
    if code.system == LOINC_SYSTEM:
        attrib["codeSystemName"] = "LOINC"
    attrib.update(extra)
    return _el(parent, tag, attrib)


def _template(parent: etree._Element, *roots: str) -> None:
    for root in roots:
        _el(parent, "templateId", {"root": root})


def _addr(parent: etree._Element, address: Address) -> None:
    if address.empty:
        _el(parent, "addr", {"nullFlavor": "UNK"})
        return
    addr = _el(parent, "addr")
    if address.house_number:
        _el(addr, "houseNumber", text=address.house_number)
    if address.street:
        _el(addr, "streetName", text=address.street)
    if address.postal_code:
        _el(addr, "postalCode", text=address.postal_code)
    if address.city:
        _el(addr, "city", text=address.city)
    if address.country:
        _el(addr, "country", text=address.country)


def _telecoms(parent: etree._Element, telecom: Iterable[str]) -> None:
    values = list(telecom)
    if not values:
        _el(parent, "telecom", {"nullFlavor": "UNK"})
    for value in values:
        _el(parent, "telecom", {"value": value, "use": "WP"})


def _person_name(parent: etree._Element, person: Person) -> None:
    name = _el(parent, "name")
    if person.prefix:
        _el(name, "prefix", text=person.prefix)
    if person.given:
        _el(name, "given", text=person.given)
    _el(name, "family", text=person.family)
    if person.suffix:
        _el(name, "suffix", text=person.suffix)


def _organisation(parent: etree._Element, tag: str, lab: Laboratory, *, practice: bool = False) -> None:
    org = _el(parent, tag)
    _el(org, "id", {"root": STRUCTURE_ID_OID, "extension": lab.structure_id})
    if lab.cofrac and tag == "representedOrganization":
        _el(org, "id", {"root": "1.2.250.1.213.6.3.1", "extension": lab.cofrac, "assigningAuthorityName": "COFRAC"})
    _el(org, "name", text=lab.name)
    _telecoms(org, lab.telecom)
    _addr(org, lab.address)
    if practice:
        _code(org, "standardIndustryClassCode", lab.practice_setting)


def _assigned(
    parent: etree._Element, tag: str, person: Person, lab: Laboratory | None, *, practice: bool = False
) -> etree._Element:
    entity = _el(parent, tag)
    _el(entity, "id", {"root": PS_ID_OID, "extension": person.id})
    if person.profession is not None:
        _code(entity, "code", person.profession)
    _addr(entity, person.address if not person.address.empty else (lab.address if lab else Address()))
    _telecoms(entity, person.telecom or (lab.telecom if lab else ()))
    _person_name(_el(entity, "assignedPerson"), person)
    if lab is not None:
        _organisation(entity, "representedOrganization", lab, practice=practice)
    return entity


# --- header ------------------------------------------------------------------------------------------


def _record_target(doc: etree._Element, report: LabReport) -> None:
    pat = report.patient
    role = _el(_el(doc, "recordTarget"), "patientRole")
    _el(role, "id", {"root": pat.ins_oid, "extension": pat.ins})
    if pat.local_id and pat.local_id_oid:
        _el(role, "id", {"root": pat.local_id_oid, "extension": pat.local_id})
    _addr(role, pat.address)
    _telecoms(role, pat.telecom)
    patient = _el(role, "patient", {"classCode": "PSN"})
    name = _el(patient, "name")
    _el(name, "family", {"qualifier": "BR"}, pat.birth_family)
    _el(name, "given", text=pat.birth_given_names)
    _el(name, "given", {"qualifier": "BR"}, pat.first_birth_given)
    if pat.used_family:
        _el(name, "family", {"qualifier": "CL"}, pat.used_family)
    if pat.used_given:
        _el(name, "given", {"qualifier": "CL"}, pat.used_given)
    _el(
        patient,
        "administrativeGenderCode",
        {"code": pat.sex, "displayName": _GENDER[pat.sex], "codeSystem": "2.16.840.1.113883.5.1"},
    )
    _el(patient, "birthTime", {"value": pat.birth_date})
    if pat.birthplace_cog:
        addr = _el(_el(_el(patient, "birthplace"), "place"), "addr")
        _el(addr, "county", text=pat.birthplace_cog)


def _header(doc: etree._Element, report: LabReport) -> None:
    lab = report.laboratory
    _el(doc, "realmCode", {"code": "FR"})
    _el(doc, "typeId", {"root": "2.16.840.1.113883.1.3", "extension": "POCD_HD000040"})
    _template(doc, *HEADER_TEMPLATES)
    _el(doc, "id", {"root": report.unique_id})
    _code(doc, "code", TYPE_CODE)
    _el(doc, "title", text=TITLE)
    _el(doc, "effectiveTime", {"value": ts(report.created)})
    _el(
        doc,
        "confidentialityCode",
        {
            "code": report.confidentiality,
            "displayName": _CONFIDENTIALITY[report.confidentiality],
            "codeSystem": CONFIDENTIALITY_SYSTEM,
        },
    )
    _el(doc, "languageCode", {"code": report.language})
    _el(doc, "setId", {"root": report.set_id})
    _el(doc, "versionNumber", {"value": str(report.version)})
    _record_target(doc, report)

    author = _el(doc, "author")
    _el(author, "time", {"value": ts(report.validated)})
    _assigned(author, "assignedAuthor", report.validator, lab)

    custodian = _el(_el(doc, "custodian"), "assignedCustodian")
    _organisation(custodian, "representedCustodianOrganization", lab)

    legal = _el(doc, "legalAuthenticator")
    _el(legal, "time", {"value": ts(report.validated)})
    _el(legal, "signatureCode", {"code": "S"})
    _assigned(legal, "assignedEntity", report.validator, lab, practice=True)

    if report.prescriber is not None:
        participant = _el(doc, "participant", {"typeCode": "REF"})
        _template(participant, "1.3.6.1.4.1.19376.1.3.3.1.6")
        when = _el(participant, "time")
        _xsi_type(when, "IVL_TS")
        if report.prescribed is not None:
            _el(when, "high", {"value": ts(report.prescribed)})
        else:
            when.set("nullFlavor", "UNK")
        entity = _el(participant, "associatedEntity", {"classCode": "PROV"})
        _el(entity, "id", {"root": PS_ID_OID, "extension": report.prescriber.id})
        if report.prescriber.profession is not None:
            _code(entity, "code", report.prescriber.profession)
        _addr(entity, report.prescriber.address)
        _telecoms(entity, report.prescriber.telecom)
        _person_name(_el(entity, "associatedPerson"), report.prescriber)

    if report.order_number:
        order = _el(_el(doc, "inFulfillmentOf"), "order")
        _el(order, "id", {"root": report.order_oid, "extension": report.order_number})

    for i, chapter in enumerate(report.chapters):
        event = _el(_el(doc, "documentationOf"), "serviceEvent")
        if i == 0:
            if report.filler_number:
                _el(event, "id", {"root": report.order_oid, "extension": report.filler_number})
            _code(event, "code", chapter)
            etree.SubElement(event, f"{{{LAB}}}statusCode", {"code": "completed"})
            span = _el(event, "effectiveTime")
            _el(span, "low", {"value": ts(report.received or _first_collection(report) or report.validated)})
            _el(span, "high", {"value": ts(report.validated)})
            performer = _el(event, "performer", {"typeCode": "PRF"})
            _template(performer, "1.3.6.1.4.1.19376.1.3.3.1.7")
            _el(_el(performer, "time"), "high", {"value": ts(report.validated)})
            _assigned(performer, "assignedEntity", report.validator, lab, practice=True)
        else:
            _code(event, "code", chapter)

    if report.action is Action.REPLACE:
        related = _el(doc, "relatedDocument", {"typeCode": "RPLC"})
        _el(_el(related, "parentDocument"), "id", {"root": report.replaces})

    encounter = _el(_el(doc, "componentOf"), "encompassingEncounter")
    _el(_el(encounter, "effectiveTime"), "low", {"value": ts(_first_collection(report) or report.validated)})
    responsible = _el(encounter, "responsibleParty")
    _assigned(responsible, "assignedEntity", report.validator, lab)
    facility = _el(_el(encounter, "location"), "healthCareFacility")
    _code(facility, "code", lab.facility_type)


def _first_collection(report: LabReport) -> datetime | None:
    times = [s.collected for s in report.specimens]
    return min(times) if times else None


# --- body --------------------------------------------------------------------------------------------


class _Ids:
    """Narrative ids (XML ID), unique in the document."""

    def __init__(self) -> None:
        self.n = 0

    def next(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"


def _narrative(section: etree._Element, battery: Battery, refs: list[str]) -> None:
    text = _el(section, "text")
    table = _el(text, "table", {"border": "0"})
    head = _el(_el(table, "thead"), "tr")
    for title in ("Analyse", "Résultat", "Valeurs de référence", "Interprétation"):
        _el(head, "th", text=title)
    body = _el(table, "tbody")
    for result, ref in zip(battery.results, refs, strict=True):
        row = _el(body, "tr")
        label = result.display_label + (" (corrigé)" if result.status is ResultStatus.CORRECTED else "")
        _el(_el(row, "td"), "content", {"ID": ref}, label)
        _el(row, "td", text=format_value(result))
        _el(row, "td", text=format_range(result.reference_range))
        _el(row, "td", text=format_interpretation(result))
        if result.comment:
            comment = _el(body, "tr")
            _el(comment, "td", {"colspan": "4"}, result.comment)


def _specimen(parent: etree._Element, specimen: Specimen) -> None:
    procedure = _el(_el(parent, "entryRelationship", {"typeCode": "COMP"}), "procedure")
    procedure.set("classCode", "PROC")
    procedure.set("moodCode", "EVN")
    _template(procedure, "1.3.6.1.4.1.19376.1.3.1.2")
    _el(_el(procedure, "effectiveTime"), "high", {"value": ts(specimen.collected)})
    role = _el(_el(procedure, "participant", {"typeCode": "PRD"}), "participantRole", {"classCode": "SPEC"})
    _el(role, "id", {"root": "1.2.250.1.213.1.1.9.2", "extension": specimen.id})
    _code(_el(role, "playingEntity"), "code", specimen.type)
    if specimen.received is not None:
        act = _el(_el(procedure, "entryRelationship", {"typeCode": "COMP"}), "act")
        act.set("classCode", "ACT")
        act.set("moodCode", "EVN")
        _el(
            act,
            "code",
            {"code": "SPRECEIVE", "codeSystem": "1.3.5.1.4.1.19376.1.5.3.2", "displayName": "Réception échantillon"},
        )
        _el(act, "effectiveTime", {"value": ts(specimen.received)})


def _value(obs: etree._Element, result: LabResult) -> None:
    if result.status is ResultStatus.CANCELLED:
        return
    value = _el(obs, "value")
    if result.kind is ValueKind.QUANTITY and result.number is not None:
        _xsi_type(value, "PQ")
        value.set("value", _num(result.number))
        value.set("unit", result.unit)
    elif result.kind is ValueKind.INTERVAL and result.number is not None:
        _xsi_type(value, "IVL_PQ")
        bound = _el(value, "low" if result.comparator.startswith(">") else "high")
        bound.set("value", _num(result.number))
        bound.set("unit", result.unit)
        bound.set("inclusive", "true" if result.comparator.endswith("=") else "false")
    elif result.kind is ValueKind.CODED and result.coded is not None:
        _xsi_type(value, "CD")
        for key, attr in (("code", "code"), ("system", "codeSystem"), ("display", "displayName")):
            if getattr(result.coded, key):
                value.set(attr, getattr(result.coded, key))
    else:
        _xsi_type(value, "ST")
        value.text = result.text


def _observation(parent: etree._Element, result: LabResult, ref: str) -> None:
    obs = _el(parent, "observation", {"classCode": "OBS", "moodCode": "EVN"})
    _template(obs, "1.3.6.1.4.1.19376.1.3.1.6", "1.2.250.1.213.1.1.3.80")
    code = _code(obs, "code", result.code)
    _el(_el(code, "originalText"), "reference", {"value": f"#{ref}"})
    _el(obs, "statusCode", {"code": "aborted" if result.status is ResultStatus.CANCELLED else "completed"})
    if result.observed is not None:
        _el(obs, "effectiveTime", {"value": ts(result.observed)})
    _value(obs, result)
    for flag in result.interpretation:
        attrib = {"code": flag, "codeSystem": INTERPRETATION_SYSTEM}
        display = interpretation_display(flag)
        if display:
            attrib["displayName"] = display
        _el(obs, "interpretationCode", attrib)
    rng = result.reference_range
    if rng is not None:
        observation_range = _el(_el(obs, "referenceRange", {"typeCode": "REFV"}), "observationRange")
        if rng.text:
            _el(observation_range, "text", text=rng.text)
        else:
            value = _el(observation_range, "value")
            _xsi_type(value, "IVL_PQ")
            for tag, bound in (("low", rng.low), ("high", rng.high)):
                if bound is not None:
                    _el(value, tag, {"value": _num(bound), "unit": rng.unit or result.unit or "1"})
        _el(observation_range, "interpretationCode", {"code": "N", "codeSystem": INTERPRETATION_SYSTEM})


def _battery_section(chapter_section: etree._Element, report: LabReport, battery: Battery, ids: _Ids) -> None:
    section = _el(_el(chapter_section, "component"), "section")
    _template(section, "1.3.6.1.4.1.19376.1.3.3.2.2", "1.2.250.1.213.1.1.2.71")
    _code(section, "code", battery.code)
    _el(section, "title", text=battery.label or battery.code.display or battery.chapter.display)
    refs = [ids.next("res") for _ in battery.results]
    _narrative(section, battery, refs)
    entry = _el(section, "entry", {"typeCode": "DRIV"})
    _template(entry, "1.3.6.1.4.1.19376.1.3.1", "1.2.250.1.213.1.1.3.21")
    act = _el(entry, "act", {"classCode": "ACT", "moodCode": "EVN"})
    _code(act, "code", battery.chapter)
    _el(act, "statusCode", {"code": "completed"})
    specimen = next((s for s in report.specimens if s.id == battery.specimen_id), None)
    if specimen is not None:
        _specimen(act, specimen)
    organizer = _el(_el(act, "entryRelationship", {"typeCode": "COMP"}), "organizer")
    organizer.set("classCode", "BATTERY")
    organizer.set("moodCode", "EVN")
    _template(organizer, "1.3.6.1.4.1.19376.1.3.1.4", "1.2.250.1.213.1.1.3.78")
    _code(organizer, "code", battery.code)
    _el(organizer, "statusCode", {"code": "completed"})
    for result, ref in zip(battery.results, refs, strict=True):
        _observation(_el(organizer, "component"), result, ref)


def _pdf_section(body: etree._Element, report: LabReport, pdf: bytes) -> None:
    section = _el(_el(body, "component"), "section")
    _template(section, "1.2.250.1.213.1.1.2.243")
    _el(section, "id", {"root": sub_id(report.unique_id, 1)})
    _code(section, "code", Code(code="55108-5", system=LOINC_SYSTEM, display="Copie du document"))
    _el(section, "title", text="Copie du document")
    text = _el(section, "text")
    row = _el(_el(_el(text, "table", {"border": "0"}), "tbody"), "tr")
    _el(_el(row, "td"), "content", {"ID": "doc-pdf-label"}, "Copie PDF du compte rendu")
    _el(_el(row, "td"), "renderMultiMedia", {"referencedObject": "doc-pdf"})
    organizer = _el(_el(section, "entry"), "organizer", {"classCode": "CLUSTER", "moodCode": "EVN"})
    _template(organizer, "1.2.250.1.213.1.1.3.18")
    _el(organizer, "id", {"root": sub_id(report.unique_id, 2)})
    _code(organizer, "code", Code(code="55107-7", system=LOINC_SYSTEM, display="Document attaché"))
    _el(organizer, "statusCode", {"code": "completed"})
    obs = _el(_el(organizer, "component"), "observation", {"classCode": "OBS", "moodCode": "EVN"})
    _template(obs, "1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48", "1.2.250.1.213.1.1.3.48.18")
    _el(obs, "id", {"root": sub_id(report.unique_id, 3)})
    _code(obs, "code", Code(code="69764-9", system=LOINC_SYSTEM, display="Type de document"))
    _el(_el(obs, "text"), "reference", {"value": "#doc-pdf-label"})
    _el(obs, "statusCode", {"code": "completed"})
    _el(obs, "effectiveTime", {"nullFlavor": "NA"})
    value = _code(obs, "value", Code(code="55108-5", system=LOINC_SYSTEM, display="Copie du document"))
    _xsi_type(value, "CD")
    media = _el(_el(organizer, "component"), "observationMedia", {"classCode": "OBS", "moodCode": "EVN"})
    media.set("ID", "doc-pdf")
    _el(media, "value", {"mediaType": "application/pdf", "representation": "B64"}, base64.b64encode(pdf).decode())


def build_cda(report: LabReport, pdf: bytes) -> bytes:
    """The CR-BIO 2024.01 CDA of ``report`` with ``pdf`` as its PDF copy, as UTF-8 bytes."""
    if report.action is Action.DELETE:
        raise ValueError("a deletion has no document to generate")
    doc = etree.Element(_q("ClinicalDocument"), nsmap=NSMAP)  # type: ignore[arg-type]
    _header(doc, report)
    body = _el(_el(doc, "component"), "structuredBody")
    ids = _Ids()
    for chapter in report.chapters:
        section = _el(_el(body, "component"), "section")
        _template(section, "1.3.6.1.4.1.19376.1.3.3.2.1", "1.2.250.1.213.1.1.2.70")
        _code(section, "code", chapter)
        _el(section, "title", text=(chapter.display or chapter.code).upper())
        for battery in report.batteries:
            if battery.chapter.code == chapter.code:
                _battery_section(section, report, battery, ids)
    _pdf_section(body, report, pdf)
    return bytes(etree.tostring(doc, xml_declaration=True, encoding="UTF-8", pretty_print=True))
