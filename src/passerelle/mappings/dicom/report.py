"""DICOM Structured Report → IMG-CR-IMG 2024.01 CDA document (docs/interop-reference.md, "Imaging").

The SR is read by :func:`passerelle.mappings.dicom.sr.read_report`; this module writes the CI-SIS
imaging report with the project's one CDA writer (:mod:`passerelle.mappings.cda.writer`): header from
the SR (patient, verifier, study, request) and the site defaults, body sections
FR-DICOM-Acte-imagerie (the SR's indication and history as narrative, the technique entry and the
DICOM object catalogue built from the SR evidence), FR-DICOM-Resultats and FR-DICOM-Conclusion.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from lxml import etree
from pydicom.dataset import Dataset

from passerelle.errors import MappingError
from passerelle.mappings.cda import writer as w
from passerelle.mappings.dicom.common import (
    DicomSite,
    PreviousManifest,
    RequestIds,
    content_time,
    dataset_timezone,
    dicom_datetime,
    person_name,
    request_ids,
    required_uid,
    study_time,
    text,
)
from passerelle.mappings.dicom.sr import MODALITY_DISPLAY, Report, report_series_key
from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FORMAT_IHE_SYSTEM,
    LOINC,
    PROFESSION_SYSTEM,
    PS_ID_OID,
    Author,
    Code,
    Document,
    DocumentKind,
    Lineage,
    Patient,
    Provenance,
    confidentiality_code,
)

__all__ = ["REPORT_TYPE", "map_structured_report", "report_series_key"]

REPORT_TYPE = Code(code="18748-4", system=LOINC, display="CR d'imagerie médicale")
IMAGING_REPORT = DocumentKind(
    type_code=REPORT_TYPE,
    class_code=Code(code="10", system=CLASS_CODE_SYSTEM, display="Compte rendu"),
    format_code=Code(
        code="urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013",
        system=FORMAT_IHE_SYSTEM,
        display="CR d'imagerie médicale (DICOM PS3.20)",
    ),
)
RADIOLOGIST = Code(code="G15_10/SM44", system=PROFESSION_SYSTEM, display="Médecin - Radio-diagnostic (SM)")
#: DICOM PS3.20 imaging report templates, then the CI-SIS IMG-CR-IMG 2024.01 one (versioned).
HEADER_TEMPLATES = ("1.2.840.10008.9.1", "1.2.840.10008.9.20", "1.2.840.10008.9.21")
VOLET_TEMPLATE = ("1.2.250.1.213.1.1.1.45", "2024.01")
DCM = "1.2.840.10008.2.16.4"
SNOMED = "2.16.840.1.113883.6.96"
DICOM_UID_SYSTEM = "1.2.840.10008.2.6.1"
UNKNOWN = "INCONNU"
UNKNOWN_ORGANISATION = "Structure non renseignée"
RESULTS_SECTION = (
    ("2.16.840.1.113883.10.20.6.1.2", "1.2.250.1.213.1.1.2.208"),
    Code(code="59776-5", system=LOINC, display="Résultats de l'acte"),
    "Résultats",
)
CONCLUSION_SECTION = (
    ("1.2.840.10008.9.5", "1.2.250.1.213.1.1.2.209"),
    Code(code="19005-8", system=LOINC, display="Conclusions"),
    "Conclusion",
)


@dataclass(frozen=True)
class ImagingHeader:
    """The header values of one IMG-CR-IMG, computed once and used by the CDA and the metadata."""

    lineage: Lineage  # unique id: the SR's SOP Instance UID
    patient: Patient
    title: str
    created: datetime
    study_time: datetime
    author: Author  # the radiologist who verified the SR, for the structure of the site
    verified: datetime
    requests: RequestIds
    procedure: Code | None  # LOINC code of the procedure, when the SR or its request gives one


# --- header values from the SR -----------------------------------------------------------------


def _verifier_id(obs: Dataset) -> str:
    """IdNat_PS of the verifying observer: ``8`` + an 11-digit RPPS, or an id already in IdNat_PS form."""
    person_id = ""
    for ident in obs.get("VerifyingObserverIdentificationCodeSequence") or ():
        scheme, value = text(ident, "CodingSchemeDesignator").upper(), text(ident, "CodeValue")
        if scheme == "RPPS" and value.isdigit() and len(value) == 11:
            person_id = f"8{value}"
        elif (scheme in ("IDNPS", "IDNAT_PS", PS_ID_OID) and value) or (
            scheme == "RPPS" and value.isdigit() and len(value) == 12 and value.startswith("8")
        ):
            person_id = value
    return person_id


def _verifier(ds: Dataset, site: DicomSite, tz: tzinfo) -> tuple[Author, datetime | None]:
    obs = (ds.get("VerifyingObserverSequence") or [Dataset()])[0]
    family, given = person_name(obs, "VerifyingObserverName")
    when = None
    raw_dt = text(obs, "VerificationDateTime")
    if raw_dt:
        when = dicom_datetime(raw_dt[:8], raw_dt[8:].split("+")[0].split("-")[0], tz, location="0040,A030")
    org = site.organisation
    author = Author(
        person_id=_verifier_id(obs),
        family=family,
        given=given,
        role=org.role or RADIOLOGIST,
        organisation_id=org.organisation_id,
        organisation_name=org.organisation_name or text(obs, "VerifyingOrganization") or text(ds, "InstitutionName"),
    )
    return author, when


def _procedure_code(ds: Dataset) -> Code | None:
    sources = [ds.get("ProcedureCodeSequence"), ds.get("PerformedProcedureCodeSequence")]
    sources += [req.get("RequestedProcedureCodeSequence") for req in ds.get("ReferencedRequestSequence") or ()]
    return next(
        (
            Code(code=text(item, "CodeValue"), system=LOINC, display=text(item, "CodeMeaning"))
            for seq in sources
            for item in seq or ()
            if text(item, "CodingSchemeDesignator") == "LN" and text(item, "CodeValue")
        ),
        None,
    )


def imaging_header(
    ds: Dataset, *, patient: Patient, site: DicomSite, now: datetime, previous: PreviousManifest | None = None
) -> ImagingHeader:
    """What the header says; a new SR for a study already reported replaces the previous report."""
    sop_uid = required_uid(ds, "SOPInstanceUID")
    tz = dataset_timezone(ds, site.local_tz)
    created = content_time(ds, tz, now)
    author, verified = _verifier(ds, site, tz)
    if not author.person_id:
        raise MappingError("SR verifier has no RPPS identifier (IMG-CR-IMG legal authenticator needs it)")
    description = text(ds, "StudyDescription")
    if previous is not None and previous.unique_id != sop_uid:
        lineage = previous.successor(sop_uid)
    else:
        lineage = Lineage(sop_uid, _stable_oid("img-cr-img-set", sop_uid))
    return ImagingHeader(
        lineage=lineage,
        patient=patient,
        title=f"{REPORT_TYPE.display} - {description}" if description else REPORT_TYPE.display,
        created=created,
        study_time=study_time(ds, tz) or created,
        author=author,
        verified=verified or created,
        requests=request_ids(ds),
        procedure=_procedure_code(ds),
    )


def _stable_oid(*parts: str) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


# --- writing the CDA ------------------------------------------------------------------------------


def _radiologist(author: Author, site: DicomSite) -> w.Professional:
    return w.Professional(
        id=author.person_id,
        family=author.family or UNKNOWN,
        given=author.given,
        role=author.role or RADIOLOGIST,
        organisation=w.Organisation(
            id=author.organisation_id,
            name=author.organisation_name or UNKNOWN_ORGANISATION,
            practice_setting=site.practice_setting,
        ),
    )


def _record_target(patient: Patient) -> w.RecordTarget:
    """The INS and the traits DICOM carries (no birthplace in DICOM: county nullFlavor UNK)."""
    ids = [(patient.ins_oid, patient.ins)]
    if patient.local_id and patient.local_id_oid:
        ids.append((patient.local_id_oid, patient.local_id))
    given_all = patient.given or UNKNOWN
    return w.RecordTarget(
        ids=tuple(ids),
        birth_family=patient.family or UNKNOWN,
        birth_given_names=given_all,
        first_birth_given=given_all.split()[0],
        sex=patient.sex if patient.sex in ("M", "F") else "U",
        birth_date=patient.birth_date,
        birthplace=w.Birthplace(),
    )


def _in_fulfillment_of(doc: etree._Element, requests: RequestIds) -> None:
    accession, placer = requests.accession, requests.order
    if accession is None or not accession.assigner:
        return
    order = w.el(w.el(doc, "inFulfillmentOf"), "order")
    if placer is not None and placer.assigner:
        w.el(order, "id", root=placer.assigner, extension=placer.value)
    else:
        w.el(order, "id", nullFlavor="UNK")
    w.el(order, "ps3-20:accessionNumber", root=accession.assigner, extension=accession.value)


def _modality_codes(report: Report) -> list[Code]:
    return [Code(code=m, system=DCM, display=MODALITY_DISPLAY.get(m, m)) for m in report.modalities]


def _service_event(doc: etree._Element, head: ImagingHeader, report: Report, radiologist: w.Professional) -> None:
    event = w.service_event(doc, classCode="ACT")
    w.el(event, "id", root=report.study_uid)
    # without a LOINC procedure code the modality still goes in translations (nullFlavor OTH allows them)
    event_code = w.code(event, "code", head.procedure) if head.procedure else w.el(event, "code", nullFlavor="OTH")
    for modality in _modality_codes(report):
        translation = w.code(event_code, "translation", modality, codeSystemName="DCM")
        qualifier = w.el(translation, "qualifier")
        name = Code(code="121139", system=DCM, display="Modalité d'imagerie")
        w.code(qualifier, "name", name, codeSystemName="DCM")
    w.span(event, head.study_time)
    w.performer(event, radiologist)


def _header(doc: etree._Element, head: ImagingHeader, report: Report, site: DicomSite) -> None:
    w.header(
        doc,
        w.Header(
            templates=HEADER_TEMPLATES,
            versioned_templates=(VOLET_TEMPLATE,),
            lineage=head.lineage,
            type_code=REPORT_TYPE,
            title=head.title,
            created=head.created,
        ),
    )
    radiologist = _radiologist(head.author, site)
    assert radiologist.organisation is not None
    keeper = w.Organisation(id=radiologist.organisation.id, name=radiologist.organisation.name)
    w.parties(doc, _record_target(head.patient), radiologist, keeper, head.verified)
    _in_fulfillment_of(doc, head.requests)
    _service_event(doc, head, report, radiologist)
    w.related_document(doc, head.lineage)
    w.encompassing_encounter(doc, head.study_time, site.facility_type)


def _section(
    parent: etree._Element,
    templates: Iterable[str],
    code: Code,
    title: str,
    paragraphs: list[str] | None = None,
    *,
    doc_uid: str,
) -> etree._Element:
    section = w.el(w.el(parent, "component"), "section")
    roots = tuple(templates)
    w.templates(section, *roots)
    w.el(section, "id", root=_stable_oid(doc_uid, *roots))
    w.code(section, "code", code)
    w.el(section, "title", title)
    if paragraphs is not None:
        w.paragraphs(section, paragraphs)
    return section


def _technique(body: etree._Element, head: ImagingHeader, report: Report) -> etree._Element:
    """FR-DICOM-Acte-imagerie: narrative and the procedure entry (modality, anatomic region)."""
    acte = _section(
        body,
        ("1.2.840.10008.9.3", "1.2.250.1.213.1.1.2.206"),
        Code(code="55111-9", system=LOINC, display="Description de l'acte d'imagerie"),
        "Technique d'imagerie",
        doc_uid=head.lineage.unique_id,
    )
    modalities = _modality_codes(report)
    # The SR's indication and history go to this narrative: the volet's FR-DICOM-informations-cliniques
    # section demands coded history observations (11348-0, 47519-4, 64100-1) that an SR does not carry.
    lines = [f"Indication : {p}" for p in report.request]
    lines += [f"Contexte clinique : {p}" for p in report.clinical]
    lines += report.procedure
    lines.append("Modalité : " + ", ".join(m.display for m in modalities))
    lines.append(f"Localisation anatomique : {report.region[1]}")
    w.paragraphs(acte, lines)
    proc = w.el(w.el(acte, "entry"), "procedure", classCode="PROC", moodCode="EVN")
    w.templates(proc, "1.2.840.10008.9.14", "1.2.250.1.213.1.1.3.153")
    w.el(proc, "id", root=_stable_oid(head.lineage.unique_id, "procedure"))
    if head.procedure is not None:
        w.code(proc, "code", head.procedure)
    else:
        w.el(proc, "code", nullFlavor="UNK")
    w.time(proc, "effectiveTime", head.study_time)
    for modality in modalities:
        w.code(proc, "methodCode", modality, codeSystemName="DCM")
    site = Code(code=report.region[0], system=SNOMED, display=report.region[1])
    w.xsi_type(w.code(proc, "targetSiteCode", site), "CD")
    return acte


def _catalogue(acte: etree._Element, head: ImagingHeader, report: Report) -> None:
    """The DICOM object catalogue: the study, its series and one instance of each."""
    catalogue = _section(
        acte,
        ("2.16.840.1.113883.10.20.6.1.1", "1.2.250.1.213.1.1.2.217"),
        Code(code="121181", system=DCM, display="Catalogue d'objets DICOM"),
        "Catalogue d'objets DICOM",
        [f"Examen {report.study_uid} : {len(report.series)} série(s) référencée(s)"],
        doc_uid=head.lineage.unique_id,
    )
    if not report.series:
        return
    study = w.el(w.el(catalogue, "entry"), "act", classCode="ACT", moodCode="EVN")
    w.templates(study, "1.2.840.10008.9.16", "1.2.250.1.213.1.1.3.155")
    w.el(study, "id", root=report.study_uid)
    w.code(study, "code", Code(code="113014", system=DCM, display="Examen"), codeSystemName="DCM")
    w.time(study, "effectiveTime", head.study_time)
    for series in report.series:
        _series_act(study, series.uid, series.modality or report.modalities[0], series.instances[:1])


def _series_act(study: etree._Element, uid: str, modality: str, instances: list[tuple[str, str]]) -> None:
    act = w.el(w.el(study, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
    w.templates(act, "1.2.840.10008.9.17", "1.2.250.1.213.1.1.3.156")
    w.el(act, "id", root=uid)
    series_code = w.code(act, "code", Code(code="113015", system=DCM, display="Séries"), codeSystemName="DCM")
    qualifier = w.el(series_code, "qualifier")
    w.code(qualifier, "name", Code(code="121139", system=DCM, display="Modalité"), codeSystemName="DCM")
    w.code(qualifier, "value", Code(code=modality, system=DCM, display=MODALITY_DISPLAY.get(modality, modality)))
    for sop_class, instance in instances:
        relation = w.el(act, "entryRelationship", typeCode="COMP")
        obs = w.el(relation, "observation", classCode="DGIMG", moodCode="EVN")
        w.templates(obs, "1.2.840.10008.9.18", "1.2.250.1.213.1.1.3.157")
        w.el(obs, "id", root=instance)
        w.code(obs, "code", Code(code=sop_class, system=DICOM_UID_SYSTEM), codeSystemName="DCMUID")


def _body(doc: etree._Element, head: ImagingHeader, report: Report) -> None:
    body = w.el(w.el(doc, "component"), "structuredBody")
    _catalogue(_technique(body, head, report), head, report)
    # FR-DICOM-Resultats when the SR has findings; FR-DICOM-Conclusion always (read_report requires one)
    for (templates, code, title), paragraphs in (
        (RESULTS_SECTION, report.findings),
        (CONCLUSION_SECTION, report.conclusion),
    ):
        if paragraphs:
            _section(body, templates, code, title, paragraphs, doc_uid=head.lineage.unique_id)


def build_imaging_cda(head: ImagingHeader, report: Report, *, site: DicomSite) -> bytes:
    """The IMG-CR-IMG document of ``report`` with the header ``head``."""
    doc = w.new_document("ps3-20")
    _header(doc, head, report, site)
    _body(doc, head, report)
    return w.serialise(doc)


# --- the document ----------------------------------------------------------------------------------


def _check_site(site: DicomSite) -> None:
    missing = [
        name
        for name, value in (
            ("organisation id (IdNat_Struct)", site.organisation.organisation_id),
            ("facility type", site.facility_type),
            ("practice setting", site.practice_setting),
        )
        if not value
    ]
    if missing:
        raise MappingError("site configuration lacks " + ", ".join(missing) + " for IMG-CR-IMG")


def map_structured_report(
    ds: Dataset,
    report: Report,
    *,
    patient: Patient,
    now: datetime,
    provenance: Provenance,
    site: DicomSite,
    previous: PreviousManifest | None = None,
) -> Document:
    """The IMG-CR-IMG document of an SR already read by :func:`passerelle.mappings.dicom.sr.read_report`.

    ``previous`` is the last report published for the same study (:func:`report_series_key`): a new
    SR then replaces it (CDA ``relatedDocument RPLC``, same setId, versionNumber + 1).

    The CDA header needs what DICOM does not carry: the structure (IdNat_Struct), its facility type
    and practice setting come from the site configuration; the legal authenticator's RPPS from the
    SR's Verifying Observer Identification Code Sequence (scheme ``RPPS``). Missing ones are refused.
    """
    _check_site(site)
    head = imaging_header(ds, patient=patient, site=site, now=now, previous=previous)
    return Document(
        **head.lineage.fields(),
        **IMAGING_REPORT.fields(),
        patient=head.patient,
        title=head.title,
        creation_time=head.created,
        service_start=head.study_time,
        author=head.author,
        legal_authenticator=head.author,
        facility_type=site.facility_type,
        practice_setting=site.practice_setting,
        confidentiality=(confidentiality_code("N"),),
        reference_ids=head.requests.reference_ids(report.study_uid),
        provenance=provenance,
        content=build_imaging_cda(head, report, site=site),
    )
