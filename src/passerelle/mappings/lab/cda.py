"""LabReport → CDA R2 CR-BIO 2024.01 (volet BIO-CR-BIO, XD-LAB based; docs/interop-reference.md, "CR-BIO").

Layout follows the ANS example ``BIO-CR-BIO_2024.01_TSH_1.xml``: structuration minimale header with the
XD-LAB and CR-BIO templateIds, one FR-CR-BIO-Chapitre section per chapter, one FR-CR-BIO-Sous-Chapitre
section per battery with its narrative table and its FR-Resultats-examens-de-biologie-medicale entry
(act → specimen procedure + battery organizer → observations), and the mandatory FR-Document-PDF-copie
section carrying the PDF rendering. Built with the project's one CDA writer
(:mod:`passerelle.mappings.cda.writer`). Pure: no clock, no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from lxml import etree

from passerelle.mappings.cda import writer as w
from passerelle.mappings.codes import interpretation_display
from passerelle.mappings.document import Action, Code
from passerelle.mappings.lab.ids import sub_id
from passerelle.mappings.lab.model import (
    LOINC_SYSTEM,
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

TYPE_CODE = Code(code="11502-2", system=LOINC_SYSTEM, display="CR d'examens biologiques")
TITLE = "Compte rendu d'examens biologiques"
HEADER_TEMPLATES = (
    "1.3.6.1.4.1.19376.1.3.3",  # IHE PaLM XD-LAB
    "1.2.250.1.213.1.1.1.55",  # CI-SIS CR-BIO
)
INTERPRETATION_SYSTEM = "2.16.840.1.113883.5.83"
COFRAC_OID = "1.2.250.1.213.6.3.1"
SPECIMEN_ID_OID = "1.2.250.1.213.1.1.9.2"
COPY = Code(code="55108-5", system=LOINC_SYSTEM, display="Copie du document")


# --- header --------------------------------------------------------------------------------------


def _organisation(lab: Laboratory, *, practice: bool = False) -> w.Organisation:
    cofrac = ((COFRAC_OID, lab.cofrac, "COFRAC"),) if lab.cofrac else ()
    return w.Organisation(
        id=lab.structure_id,
        name=lab.name,
        other_ids=cofrac,
        telecom=lab.telecom,
        address=lab.address,
        practice_setting=lab.practice_setting if practice else None,
    )


def _professional(person: Person, lab: Laboratory | None, *, practice: bool = False) -> w.Professional:
    """A person with the laboratory's address and telephone when they have none of their own."""
    return w.Professional(
        id=person.id,
        family=person.family,
        given=person.given,
        prefix=person.prefix,
        suffix=person.suffix,
        role=person.profession,
        address=person.address if not person.address.empty or lab is None else lab.address,
        telecom=person.telecom or (lab.telecom if lab is not None else ()),
        organisation=_organisation(lab, practice=practice) if lab is not None else None,
    )


def _record_target(report: LabReport) -> w.RecordTarget:
    pat = report.patient
    ids = [(pat.ins_oid, pat.ins)]
    if pat.local_id and pat.local_id_oid:
        ids.append((pat.local_id_oid, pat.local_id))
    return w.RecordTarget(
        ids=tuple(ids),
        birth_family=pat.birth_family,
        birth_given_names=pat.birth_given_names,
        first_birth_given=pat.first_birth_given,
        used_family=pat.used_family,
        used_given=pat.used_given,
        sex=pat.sex,
        birth_date=pat.birth_date,
        address=pat.address,
        telecom=pat.telecom,
        birthplace=w.Birthplace(county=pat.birthplace_cog) if pat.birthplace_cog else None,
    )


def _prescriber(doc: etree._Element, report: LabReport) -> None:
    if report.prescriber is None:
        return
    participant = w.el(doc, "participant", typeCode="REF")
    w.templates(participant, "1.3.6.1.4.1.19376.1.3.3.1.6")
    when = w.xsi_type(w.el(participant, "time"), "IVL_TS")
    if report.prescribed is not None:
        w.time(when, "high", report.prescribed)
    else:
        when.set("nullFlavor", "UNK")
    prescriber = _professional(report.prescriber, None)
    w.assigned(participant, "associatedEntity", prescriber, person_tag="associatedPerson", classCode="PROV")


def _documentation_of(doc: etree._Element, report: LabReport, validator: w.Professional) -> None:
    """One serviceEvent per chapter; the first carries the filler order, the times and the performer."""
    for i, chapter in enumerate(report.chapters):
        event = w.service_event(doc)
        if i > 0:
            w.code(event, "code", chapter)
            continue
        if report.filler_number:
            w.el(event, "id", root=report.order_oid, extension=report.filler_number)
        w.code(event, "code", chapter)
        w.el(event, "lab:statusCode", code="completed")
        w.span(event, report.received or _first_collection(report) or report.validated, report.validated)
        w.performer(event, validator, template="1.3.6.1.4.1.19376.1.3.3.1.7", until=report.validated)


def _header(doc: etree._Element, report: LabReport) -> None:
    lab = report.laboratory
    w.header(
        doc,
        w.Header(
            templates=HEADER_TEMPLATES,
            lineage=report.lineage,
            type_code=TYPE_CODE,
            title=TITLE,
            created=report.created,
            confidentiality=report.confidentiality,
            language=report.language,
        ),
    )
    validator = _professional(report.validator, lab)
    practising = _professional(report.validator, lab, practice=True)
    keeper = replace(_organisation(lab), other_ids=())
    w.parties(doc, _record_target(report), validator, keeper, report.validated, signer=practising)
    _prescriber(doc, report)
    if report.order_number:
        order = w.el(w.el(doc, "inFulfillmentOf"), "order")
        w.el(order, "id", root=report.order_oid, extension=report.order_number)
    _documentation_of(doc, report, practising)
    w.related_document(doc, report.lineage)
    start = _first_collection(report) or report.validated
    w.encompassing_encounter(doc, start, lab.facility_type, responsible=validator)


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


def _num(value: Decimal) -> str:
    return format(value, "f")


def _narrative(section: etree._Element, battery: Battery, refs: list[str]) -> None:
    table = w.el(w.el(section, "text"), "table", border="0")
    head = w.el(w.el(table, "thead"), "tr")
    for title in ("Analyse", "Résultat", "Valeurs de référence", "Interprétation"):
        w.el(head, "th", title)
    body = w.el(table, "tbody")
    for result, ref in zip(battery.results, refs, strict=True):
        row = w.el(body, "tr")
        label = result.display_label + (" (corrigé)" if result.status is ResultStatus.CORRECTED else "")
        w.el(w.el(row, "td"), "content", label, ID=ref)
        for text in (format_value(result), format_range(result.reference_range), format_interpretation(result)):
            w.el(row, "td", text)
        if result.comment:
            w.el(w.el(body, "tr"), "td", result.comment, colspan="4")


def _specimen(parent: etree._Element, specimen: Specimen) -> None:
    procedure = w.el(w.el(parent, "entryRelationship", typeCode="COMP"), "procedure", classCode="PROC", moodCode="EVN")
    w.templates(procedure, "1.3.6.1.4.1.19376.1.3.1.2")
    w.time(w.el(procedure, "effectiveTime"), "high", specimen.collected)
    role = w.el(w.el(procedure, "participant", typeCode="PRD"), "participantRole", classCode="SPEC")
    w.el(role, "id", root=SPECIMEN_ID_OID, extension=specimen.id)
    w.code(w.el(role, "playingEntity"), "code", specimen.type)
    if specimen.received is not None:
        act = w.el(w.el(procedure, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
        received = Code(code="SPRECEIVE", system="1.3.5.1.4.1.19376.1.5.3.2", display="Réception échantillon")
        w.code(act, "code", received)
        w.time(act, "effectiveTime", specimen.received)


def _quantity(value: etree._Element, result: LabResult, number: Decimal) -> None:
    w.xsi_type(value, "PQ")
    value.set("value", _num(number))
    value.set("unit", result.unit)


def _interval(value: etree._Element, result: LabResult, number: Decimal) -> None:
    w.xsi_type(value, "IVL_PQ")
    bound = w.el(value, "low" if result.comparator.startswith(">") else "high")
    bound.set("value", _num(number))
    bound.set("unit", result.unit)
    bound.set("inclusive", "true" if result.comparator.endswith("=") else "false")


def _coded(value: etree._Element, coded: Code) -> None:
    w.xsi_type(value, "CD")
    for attr, text in (("code", coded.code), ("codeSystem", coded.system), ("displayName", coded.display)):
        if text:
            value.set(attr, text)


def _value(obs: etree._Element, result: LabResult) -> None:
    if result.status is ResultStatus.CANCELLED:
        return
    value = w.el(obs, "value")
    if result.kind is ValueKind.QUANTITY and result.number is not None:
        _quantity(value, result, result.number)
    elif result.kind is ValueKind.INTERVAL and result.number is not None:
        _interval(value, result, result.number)
    elif result.kind is ValueKind.CODED and result.coded is not None:
        _coded(value, result.coded)
    else:
        w.xsi_type(value, "ST")
        value.text = result.text


def _reference_range(obs: etree._Element, result: LabResult) -> None:
    rng = result.reference_range
    if rng is None:
        return
    observation_range = w.el(w.el(obs, "referenceRange", typeCode="REFV"), "observationRange")
    if rng.text:
        w.el(observation_range, "text", rng.text)
    else:
        value = w.xsi_type(w.el(observation_range, "value"), "IVL_PQ")
        for tag, bound in (("low", rng.low), ("high", rng.high)):
            if bound is not None:
                w.el(value, tag, value=_num(bound), unit=rng.unit or result.unit or "1")
    w.el(observation_range, "interpretationCode", code="N", codeSystem=INTERPRETATION_SYSTEM)


def _observation(parent: etree._Element, result: LabResult, ref: str) -> None:
    obs = w.el(parent, "observation", classCode="OBS", moodCode="EVN")
    w.templates(obs, "1.3.6.1.4.1.19376.1.3.1.6", "1.2.250.1.213.1.1.3.80")
    code = w.code(obs, "code", result.code)
    w.el(w.el(code, "originalText"), "reference", value=f"#{ref}")
    w.el(obs, "statusCode", code="aborted" if result.status is ResultStatus.CANCELLED else "completed")
    if result.observed is not None:
        w.time(obs, "effectiveTime", result.observed)
    _value(obs, result)
    for flag in result.interpretation:
        w.code(obs, "interpretationCode", Code(code=flag, system=INTERPRETATION_SYSTEM, display=_flag_display(flag)))
    _reference_range(obs, result)


def _flag_display(flag: str) -> str:
    return interpretation_display(flag) or ""


def _battery_section(chapter_section: etree._Element, report: LabReport, battery: Battery, ids: _Ids) -> None:
    section = w.el(w.el(chapter_section, "component"), "section")
    w.templates(section, "1.3.6.1.4.1.19376.1.3.3.2.2", "1.2.250.1.213.1.1.2.71")
    w.code(section, "code", battery.code)
    w.el(section, "title", battery.label or battery.code.display or battery.chapter.display)
    refs = [ids.next("res") for _ in battery.results]
    _narrative(section, battery, refs)
    entry = w.el(section, "entry", typeCode="DRIV")
    w.templates(entry, "1.3.6.1.4.1.19376.1.3.1", "1.2.250.1.213.1.1.3.21")
    act = w.el(entry, "act", classCode="ACT", moodCode="EVN")
    w.code(act, "code", battery.chapter)
    w.el(act, "statusCode", code="completed")
    specimen = next((s for s in report.specimens if s.id == battery.specimen_id), None)
    if specimen is not None:
        _specimen(act, specimen)
    organizer = w.el(w.el(act, "entryRelationship", typeCode="COMP"), "organizer", classCode="BATTERY", moodCode="EVN")
    w.templates(organizer, "1.3.6.1.4.1.19376.1.3.1.4", "1.2.250.1.213.1.1.3.78")
    w.code(organizer, "code", battery.code)
    w.el(organizer, "statusCode", code="completed")
    for result, ref in zip(battery.results, refs, strict=True):
        _observation(w.el(organizer, "component"), result, ref)


def _pdf_section(body: etree._Element, report: LabReport, pdf: bytes) -> None:
    section = w.el(w.el(body, "component"), "section")
    w.templates(section, "1.2.250.1.213.1.1.2.243")
    w.el(section, "id", root=sub_id(report.unique_id, 1))
    w.code(section, "code", COPY)
    w.el(section, "title", "Copie du document")
    row = w.el(w.el(w.el(w.el(section, "text"), "table", border="0"), "tbody"), "tr")
    w.el(w.el(row, "td"), "content", "Copie PDF du compte rendu", ID="doc-pdf-label")
    w.el(w.el(row, "td"), "renderMultiMedia", referencedObject="doc-pdf")
    organizer = w.el(w.el(section, "entry"), "organizer", classCode="CLUSTER", moodCode="EVN")
    w.templates(organizer, "1.2.250.1.213.1.1.3.18")
    w.el(organizer, "id", root=sub_id(report.unique_id, 2))
    w.code(organizer, "code", Code(code="55107-7", system=LOINC_SYSTEM, display="Document attaché"))
    w.el(organizer, "statusCode", code="completed")
    obs = w.el(w.el(organizer, "component"), "observation", classCode="OBS", moodCode="EVN")
    w.templates(obs, "1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48", "1.2.250.1.213.1.1.3.48.18")
    w.el(obs, "id", root=sub_id(report.unique_id, 3))
    w.code(obs, "code", Code(code="69764-9", system=LOINC_SYSTEM, display="Type de document"))
    w.el(w.el(obs, "text"), "reference", value="#doc-pdf-label")
    w.el(obs, "statusCode", code="completed")
    w.el(obs, "effectiveTime", nullFlavor="NA")
    w.xsi_type(w.code(obs, "value", COPY), "CD")
    media = w.el(w.el(organizer, "component"), "observationMedia", classCode="OBS", moodCode="EVN", ID="doc-pdf")
    w.el(media, "value", base64.b64encode(pdf).decode(), mediaType="application/pdf", representation="B64")


def build_crbio_cda(report: LabReport, pdf: bytes) -> bytes:
    """The CR-BIO 2024.01 CDA of ``report`` with ``pdf`` as its PDF copy, as UTF-8 bytes."""
    if report.action is Action.DELETE:
        raise ValueError("a deletion has no document to generate")
    doc = w.new_document("lab")
    _header(doc, report)
    body = w.el(w.el(doc, "component"), "structuredBody")
    ids = _Ids()
    for chapter in report.chapters:
        section = w.el(w.el(body, "component"), "section")
        w.templates(section, "1.3.6.1.4.1.19376.1.3.3.2.1", "1.2.250.1.213.1.1.2.70")
        w.code(section, "code", chapter)
        w.el(section, "title", (chapter.display or chapter.code).upper())
        for battery in report.batteries:
            if battery.chapter.code == chapter.code:
                _battery_section(section, report, battery, ids)
    _pdf_section(body, report, pdf)
    return w.serialise(doc, pretty=True)
