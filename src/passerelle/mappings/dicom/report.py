"""DICOM Structured Report → IMG-CR-IMG 2024.01 CDA document (dmp-interop.md §4.4).

A narrative SR (Basic Text, Enhanced or Comprehensive; TID 2000 style: headings holding TEXT items)
becomes a CI-SIS imaging report: header from the SR (patient, verifier, study, request) and the site
defaults, body sections FR-DICOM-informations-cliniques, FR-DICOM-Acte-imagerie (with the technique
entry and the DICOM object catalogue built from the SR evidence), FR-DICOM-Resultats and
FR-DICOM-Conclusion. What the volet requires and DICOM cannot give is refused with a
:class:`MappingError` naming it (no conclusion, no modality, no anatomic region, unverified or
partial report, measurement-only TID 1500 report). Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree
from pydicom.dataset import Dataset

from passerelle.errors import MappingError
from passerelle.mappings.dicom.common import (
    DicomSite,
    PreviousManifest,
    dataset_timezone,
    dicom_datetime,
    person_name,
    required_uid,
    text,
)
from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FORMAT_IHE_SYSTEM,
    LOINC,
    PROFESSION_SYSTEM,
    PS_ID_OID,
    STRUCTURE_ID_OID,
    Action,
    Author,
    Code,
    Document,
    Patient,
    Provenance,
    ReferenceId,
    confidentiality_code,
)

REPORT_TYPE = Code(code="18748-4", system=LOINC, display="CR d'imagerie médicale")
REPORT_CLASS = Code(code="10", system=CLASS_CODE_SYSTEM, display="Compte rendu")
REPORT_FORMAT = Code(
    code="urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013",
    system=FORMAT_IHE_SYSTEM,
    display="CR d'imagerie médicale (DICOM PS3.20)",
)
REPORT_MIME = "text/xml"
RADIOLOGIST = Code(code="G15_10/SM44", system=PROFESSION_SYSTEM, display="Médecin - Radio-diagnostic (SM)")

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PS320 = "urn:dicom-org:ps3-20"
DCM = "1.2.840.10008.2.16.4"
SNOMED = "2.16.840.1.113883.6.96"
DICOM_UID_SYSTEM = "1.2.840.10008.2.6.1"
_NS = {None: HL7, "xsi": XSI, "ps3-20": PS320}

MEASUREMENT_REPORT = ("126000", "DCM")

# Heading concept codes of SR reports (TID 2000 / CID 7001 and their LOINC equivalents) by target section.
_CONCLUSION = {("121076", "DCM"), ("121072", "DCM"), ("121073", "DCM"), ("19005-8", "LN"), ("121077", "DCM")}
_FINDINGS = {("121070", "DCM"), ("121071", "DCM"), ("59776-5", "LN"), ("18782-3", "LN"), ("121069", "DCM")}
_CLINICAL = {("121060", "DCM"), ("121062", "DCM"), ("121109", "DCM"), ("55752-0", "LN"), ("11329-0", "LN")}
_REQUEST = {("121062", "DCM"), ("121109", "DCM"), ("55115-0", "LN")}
_PROCEDURE = {("121064", "DCM"), ("121065", "DCM"), ("55111-9", "LN")}
_SITE_CONCEPTS = {("363698007", "SCT"), ("G-C0E3", "SRT"), ("123014", "DCM"), ("39111-0", "LN")}

#: Imaging modality of the referenced images, by SOP class (JDV_ModaliteAcquisition_CISIS codes).
_MODALITY_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "MG",
    "1.2.840.10008.5.1.4.1.1.1.3": "IO",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "IO",
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",
    "1.2.840.10008.5.1.4.1.1.3.1": "US",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.6.2": "US",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.1.1": "XA",
    "1.2.840.10008.5.1.4.1.1.12.2": "RF",
    "1.2.840.10008.5.1.4.1.1.12.2.1": "RF",
}
_MODALITY_DISPLAY = {
    "CR": "Radiographie assistée par ordinateur",
    "CT": "Tomodensitométrie",
    "DX": "Radiographie numérique",
    "IO": "Radiographie intrabuccale",
    "MG": "Mammographie",
    "MR": "Résonance magnétique",
    "NM": "Médecine nucléaire",
    "PT": "TEP : Tomographie par émission de positons",
    "RF": "Radio-fluoroscopie",
    "US": "Échographie",
    "XA": "Angiographie X-Ray",
}
#: Body Part Examined (PS3.16 CID 4031 defined terms) → SNOMED CT concept of JDV_LocalisationAnatomique_CISIS.
_REGION_BY_BODY_PART = {
    "HEAD": ("302548004", "tête entière"),
    "BRAIN": ("258335003", "encéphale entier"),
    "SKULL": ("731717004", "crâne entier"),
    "NECK": ("302550007", "cou entier"),
    "CSPINE": ("361684008", "colonne vertébrale cervicale entière"),
    "TSPINE": ("243931006", "colonne thoracique entière"),
    "LSPINE": ("361686005", "colonne vertébrale lombaire entière"),
    "SPINE": ("44300000", "colonne vertébrale entière"),
    "CHEST": ("302551006", "thorax entier"),
    "THORAX": ("302551006", "thorax entier"),
    "LUNG": ("181216001", "poumon entier"),
    "HEART": ("302509004", "cœur entier"),
    "BREAST": ("181131000", "sein entier"),
    "ABDOMEN": ("302553009", "abdomen entier"),
    "LIVER": ("181268008", "foie entier"),
    "KIDNEY": ("181414000", "rein entier"),
    "PELVIS": ("229765004", "pelvis entier"),
    "SHOULDER": ("361103004", "région entière de l'épaule"),
    "ELBOW": ("76248009", "région entière du coude"),
    "WRIST": ("361289009", "région entière du poignet"),
    "HAND": ("302539009", "main entière"),
    "HIP": ("302543008", "région entière de la hanche"),
    "KNEE": ("361291001", "région entière du genou"),
    "LEG": ("362793004", "partie inférieure entière de la jambe, du genou à la cheville"),
    "ANKLE": ("361292008", "région entière de la cheville"),
    "FOOT": ("302545001", "pied entier"),
    "WHOLEBODY": ("38266002", "corps entier"),
}
_REGION_CODES = {code: display for code, display in _REGION_BY_BODY_PART.values()}


@dataclass
class _Section:
    code: tuple[str, str]
    title: str
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class _Series:
    uid: str
    instances: list[tuple[str, str]]  # (SOP class, SOP instance)


@dataclass
class Report:
    """What an SR says, read once (:func:`read_report`), before the patient is resolved."""

    clinical: list[str]
    request: list[str]
    procedure: list[str]
    findings: list[str]
    conclusion: list[str]
    modalities: list[str]
    region: tuple[str, str]
    study_uid: str
    series: list[_Series]


# --- reading the SR -------------------------------------------------------------------------------


def _concept(item: Dataset) -> tuple[str, str, str]:
    names = item.get("ConceptNameCodeSequence") or ()
    if not names:
        return "", "", ""
    c = names[0]
    return text(c, "CodeValue"), text(c, "CodingSchemeDesignator"), text(c, "CodeMeaning")


def _item_text(item: Dataset) -> str:
    kind = text(item, "ValueType")
    if kind == "TEXT":
        return str(item.get("TextValue", "") or "").strip()
    if kind == "CODE":
        codes = item.get("ConceptCodeSequence") or ()
        label = _concept(item)[2]
        value = text(codes[0], "CodeMeaning") if codes else ""
        return f"{label} : {value}" if label and value else value
    return ""


def _walk(items: Iterable[Dataset], heading: tuple[str, str, str], out: list[_Section], depth: int = 0) -> None:
    if depth > 16:
        raise MappingError("SR content tree nested too deeply", location="0040,A730")
    for item in items:
        kind = text(item, "ValueType")
        if kind == "CONTAINER":
            code = _concept(item)
            out.append(_Section((code[0], code[1]), code[2]))
            _walk(item.get("ContentSequence") or (), code, out, depth + 1)
            continue
        value = _item_text(item)
        if value:
            if not out or out[-1].code != (heading[0], heading[1]):
                out.append(_Section((heading[0], heading[1]), heading[2]))
            out[-1].paragraphs.append(value)


def _region(ds: Dataset) -> tuple[str, str] | None:
    stack = list(ds.get("ContentSequence") or ())
    while stack:
        item = stack.pop()
        stack.extend(item.get("ContentSequence") or ())
        code, scheme, _ = _concept(item)
        if text(item, "ValueType") == "CODE" and (code, scheme) in _SITE_CONCEPTS:
            for value in item.get("ConceptCodeSequence") or ():
                sct = text(value, "CodeValue")
                if text(value, "CodingSchemeDesignator") in ("SCT", "SRT") and sct in _REGION_CODES:
                    return sct, _REGION_CODES[sct]
    body_part = text(ds, "BodyPartExamined").upper()
    return _REGION_BY_BODY_PART.get(body_part)


def _evidence(ds: Dataset) -> tuple[str, list[_Series]]:
    studies: dict[str, list[_Series]] = {}
    for seq in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(seq) or ():
            uid = required_uid(study, "StudyInstanceUID")
            for series in study.get("ReferencedSeriesSequence") or ():
                refs = [
                    (text(r, "ReferencedSOPClassUID"), text(r, "ReferencedSOPInstanceUID"))
                    for r in series.get("ReferencedSOPSequence") or ()
                ]
                studies.setdefault(uid, []).append(_Series(required_uid(series, "SeriesInstanceUID"), refs))
    own = required_uid(ds, "StudyInstanceUID")
    if len(studies) > 1:
        raise MappingError(
            f"SR evidence references {len(studies)} studies; one report, one study", location="0040,A375"
        )
    if studies and own not in studies:
        own = next(iter(studies))
    return own, studies.get(own, [])


def report_series_key(ds: Dataset) -> str:
    """Journal series key of an SR report: one current report per study (``report:<Study UID>``)."""
    return f"report:{_evidence(ds)[0]}"


def read_report(ds: Dataset) -> Report:
    """Read the narrative of an SR, or refuse it with the reason (no patient data in the message)."""
    if text(ds, "ValueType") != "CONTAINER":
        raise MappingError("SR root is not a CONTAINER", location="0040,A040")
    code, scheme, _ = _concept(ds)
    templates = {text(t, "TemplateIdentifier") for t in ds.get("ContentTemplateSequence") or ()}
    if (code, scheme) == MEASUREMENT_REPORT or "1500" in templates:
        raise MappingError("measurement-only TID 1500 report cannot become IMG-CR-IMG", location="0040,A043")
    if text(ds, "CompletionFlag").upper() == "PARTIAL":
        raise MappingError("SR is partial (Completion Flag PARTIAL); only final reports are published")
    if text(ds, "VerificationFlag").upper() != "VERIFIED" or not ds.get("VerifyingObserverSequence"):
        raise MappingError("SR is not verified; IMG-CR-IMG needs the radiologist who validated it")
    sections: list[_Section] = []
    _walk(ds.get("ContentSequence") or (), ("", "", ""), sections)
    if not any(s.paragraphs for s in sections):
        raise MappingError("SR has no text content", location="0040,A730")
    buckets: dict[str, list[str]] = {k: [] for k in ("clinical", "request", "procedure", "findings", "conclusion")}
    for s in sections:
        if not s.paragraphs:
            continue
        if s.code in _CONCLUSION:
            key = "conclusion"
        elif s.code in _REQUEST:
            key = "request"
        elif s.code in _CLINICAL:
            key = "clinical"
        elif s.code in _PROCEDURE:
            key = "procedure"
        else:
            key = "findings"
        label = s.title if key == "findings" and s.code not in _FINDINGS and s.title else ""
        buckets[key].extend(f"{label} : {p}" if label else p for p in s.paragraphs)
    if not buckets["conclusion"]:
        raise MappingError("SR has no conclusion or impression section (IMG-CR-IMG requires one)")
    study_uid, series = _evidence(ds)
    modalities = sorted({m for s in series for cls, _ in s.instances if (m := _MODALITY_BY_SOP_CLASS.get(cls))})
    if not modalities:
        raise MappingError("SR references no image of a known modality (IMG-CR-IMG needs the modality)")
    region = _region(ds)
    if region is None:
        raise MappingError("SR has no coded anatomic region (IMG-CR-IMG needs a targetSiteCode)")
    return Report(
        clinical=buckets["clinical"],
        request=buckets["request"],
        procedure=buckets["procedure"],
        findings=buckets["findings"],
        conclusion=buckets["conclusion"],
        modalities=modalities,
        region=region,
        study_uid=study_uid,
        series=series,
    )


# --- writing the CDA ------------------------------------------------------------------------------


def _el(parent: etree._Element, tag: str, text_: str | None = None, **attrs: str) -> etree._Element:
    ns, _, local = tag.rpartition(":")
    qname = f"{{{PS320}}}{local}" if ns == "ps3-20" else f"{{{HL7}}}{tag}"
    el = etree.SubElement(parent, qname, attrs)
    if text_ is not None:
        el.text = text_
    return el


def _ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S%z")


def _code(parent: etree._Element, tag: str, code: Code, **extra: str) -> etree._Element:
    attrs = {"code": code.code, "codeSystem": code.system, **extra}
    if code.display:
        attrs["displayName"] = code.display
    return _el(parent, tag, **attrs)


def _paragraphs(section: etree._Element, paragraphs: list[str], empty: str = "Néant") -> None:
    body = _el(section, "text")
    for p in paragraphs or [empty]:
        lines = p.splitlines() or [""]
        para = _el(body, "paragraph", lines[0])
        for line in lines[1:]:
            br = _el(para, "br")
            br.tail = line


def _section(
    parent: etree._Element,
    templates: Iterable[str],
    code: Code,
    title: str,
    paragraphs: list[str] | None = None,
    *,
    doc_uid: str,
) -> etree._Element:
    comp = _el(parent, "component")
    sec = _el(comp, "section")
    templates = tuple(templates)
    for t in templates:
        _el(sec, "templateId", root=t)
    _el(sec, "id", root=_stable_oid(doc_uid, *templates))
    _code(sec, "code", code)
    _el(sec, "title", title)
    if paragraphs is not None:
        _paragraphs(sec, paragraphs)
    return sec


def _stable_oid(*parts: str) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


def _person(parent: etree._Element, tag: str, author: Author) -> None:
    person = _el(parent, tag)
    name = _el(person, "name")
    if author.given:
        _el(name, "given", author.given)
    _el(name, "family", author.family or "INCONNU")


def _organisation(parent: etree._Element, tag: str, author: Author, site: DicomSite) -> None:
    org = _el(parent, tag)
    if author.organisation_id:
        _el(org, "id", root=STRUCTURE_ID_OID, extension=author.organisation_id)
    else:
        _el(org, "id", nullFlavor="UNK")
    _el(org, "name", author.organisation_name or "Structure non renseignée")
    if tag == "representedOrganization" and site.practice_setting is not None:
        _code(org, "standardIndustryClassCode", site.practice_setting)


def _assigned(parent: etree._Element, tag: str, author: Author, site: DicomSite, *, with_code: bool = True) -> None:
    entity = _el(parent, tag)
    if author.person_id:
        _el(entity, "id", root=PS_ID_OID, extension=author.person_id)
    else:
        _el(entity, "id", nullFlavor="UNK")
    if with_code:
        _code(entity, "code", author.role or RADIOLOGIST)
    _person(entity, "assignedPerson", author)
    _organisation(entity, "representedOrganization", author, site)


def _verifier(ds: Dataset, site: DicomSite, tz: Any) -> tuple[Author, datetime | None]:
    obs = (ds.get("VerifyingObserverSequence") or [Dataset()])[0]
    family, given = person_name(obs, "VerifyingObserverName")
    person_id = ""
    for ident in obs.get("VerifyingObserverIdentificationCodeSequence") or ():
        scheme, value = text(ident, "CodingSchemeDesignator").upper(), text(ident, "CodeValue")
        if scheme == "RPPS" and value.isdigit() and len(value) == 11:
            person_id = f"8{value}"
        elif (scheme in ("IDNPS", "IDNAT_PS", PS_ID_OID) and value) or (
            scheme == "RPPS" and value.isdigit() and len(value) == 12 and value.startswith("8")
        ):
            person_id = value
    when = None
    raw_dt = text(obs, "VerificationDateTime")
    if raw_dt:
        when = dicom_datetime(raw_dt[:8], raw_dt[8:].split("+")[0].split("-")[0], tz, location="0040,A030")
    org = site.organisation
    author = Author(
        person_id=person_id,
        family=family,
        given=given,
        role=org.role or RADIOLOGIST,
        organisation_id=org.organisation_id,
        organisation_name=org.organisation_name or text(obs, "VerifyingOrganization") or text(ds, "InstitutionName"),
    )
    return author, when


def _requests(ds: Dataset) -> tuple[str, str, str, str]:
    """(accession, accession issuer OID, placer order, placer issuer OID)."""
    accession = text(ds, "AccessionNumber")
    acc_root = ""
    for item in ds.get("IssuerOfAccessionNumberSequence") or ():
        acc_root = acc_root or text(item, "UniversalEntityID")
    order = order_root = ""
    for req in ds.get("ReferencedRequestSequence") or ():
        if not accession:
            accession = text(req, "AccessionNumber")
        for item in req.get("IssuerOfAccessionNumberSequence") or ():
            acc_root = acc_root or text(item, "UniversalEntityID")
        order = order or text(req, "PlacerOrderNumberImagingServiceRequest")
        for item in req.get("OrderPlacerIdentifierSequence") or ():
            order_root = order_root or text(item, "UniversalEntityID")
    return accession, acc_root, order, order_root


def _procedure_code(ds: Dataset) -> Code | None:
    sources = [ds.get("ProcedureCodeSequence"), ds.get("PerformedProcedureCodeSequence")]
    sources += [req.get("RequestedProcedureCodeSequence") for req in ds.get("ReferencedRequestSequence") or ()]
    for seq in sources:
        for item in seq or ():
            if text(item, "CodingSchemeDesignator") == "LN" and text(item, "CodeValue"):
                return Code(code=text(item, "CodeValue"), system=LOINC, display=text(item, "CodeMeaning"))
    return None


def build_cda(
    ds: Dataset,
    report: Report,
    *,
    patient: Patient,
    site: DicomSite,
    now: datetime,
    previous: PreviousManifest | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The IMG-CR-IMG document and the header values the metadata needs."""
    sop_uid = required_uid(ds, "SOPInstanceUID")
    tz = dataset_timezone(ds, site.local_tz)
    created = (
        dicom_datetime(text(ds, "ContentDate"), text(ds, "ContentTime"), tz, location="0008,0023")
        or dicom_datetime(text(ds, "InstanceCreationDate"), text(ds, "InstanceCreationTime"), tz, location="0008,0012")
        or now
    )
    study_time = dicom_datetime(text(ds, "StudyDate"), text(ds, "StudyTime"), tz, location="0008,0020") or created
    author, verified = _verifier(ds, site, tz)
    if not author.person_id:
        raise MappingError("SR verifier has no RPPS identifier (IMG-CR-IMG legal authenticator needs it)")
    verified = verified or created
    accession, acc_root, order, order_root = _requests(ds)
    proc_code = _procedure_code(ds)
    description = text(ds, "StudyDescription")
    title = f"{REPORT_TYPE.display} - {description}" if description else REPORT_TYPE.display
    set_id, version, replaces = _stable_oid("img-cr-img-set", sop_uid), 1, ""
    if previous is not None and previous.unique_id != sop_uid:
        set_id, version, replaces = previous.set_id or previous.unique_id, previous.version + 1, previous.unique_id

    root = etree.Element(f"{{{HL7}}}ClinicalDocument", nsmap=_NS)  # type: ignore[arg-type]
    _el(root, "realmCode", code="FR")
    _el(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    for t in (
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.2.840.10008.9.1",
        "1.2.840.10008.9.20",
        "1.2.840.10008.9.21",
    ):
        _el(root, "templateId", root=t)
    _el(root, "templateId", root="1.2.250.1.213.1.1.1.45", extension="2024.01")
    _el(root, "id", root=sop_uid)
    _code(root, "code", REPORT_TYPE, codeSystemName="LOINC")
    _el(root, "title", title)
    _el(root, "effectiveTime", value=_ts(created))
    _code(root, "confidentialityCode", confidentiality_code("N"))
    _el(root, "languageCode", code="fr-FR")
    _el(root, "setId", root=set_id)
    _el(root, "versionNumber", value=str(version))

    # recordTarget: the INS and the traits DICOM carries (no birthplace in DICOM: county nullFlavor UNK)
    role = _el(_el(root, "recordTarget"), "patientRole")
    _el(role, "id", root=patient.ins_oid, extension=patient.ins)
    if patient.local_id and patient.local_id_oid:
        _el(role, "id", root=patient.local_id_oid, extension=patient.local_id)
    pat = _el(role, "patient")
    name = _el(pat, "name")
    _el(name, "family", patient.family or "INCONNU", qualifier="BR")
    given_all = patient.given or "INCONNU"
    _el(name, "given", given_all)
    _el(name, "given", given_all.split()[0], qualifier="BR")
    sex = patient.sex if patient.sex in ("M", "F") else "U"
    _el(pat, "administrativeGenderCode", code=sex, codeSystem="2.16.840.1.113883.5.1")
    if patient.birth_date:
        _el(pat, "birthTime", value=patient.birth_date)
    else:
        _el(pat, "birthTime", nullFlavor="UNK")
    place_addr = _el(_el(_el(pat, "birthplace"), "place"), "addr")
    _el(place_addr, "county", nullFlavor="UNK")

    auth = _el(root, "author")
    _el(auth, "time", value=_ts(verified))
    _assigned(auth, "assignedAuthor", author, site)
    cust = _el(_el(_el(root, "custodian"), "assignedCustodian"), "representedCustodianOrganization")
    if author.organisation_id:
        _el(cust, "id", root=STRUCTURE_ID_OID, extension=author.organisation_id)
    else:
        _el(cust, "id", nullFlavor="UNK")
    _el(cust, "name", author.organisation_name or "Structure non renseignée")
    legal = _el(root, "legalAuthenticator")
    _el(legal, "time", value=_ts(verified))
    _el(legal, "signatureCode", code="S")
    _assigned(legal, "assignedEntity", author, site)

    if accession and acc_root:
        order_el = _el(_el(root, "inFulfillmentOf"), "order")
        if order and order_root:
            _el(order_el, "id", root=order_root, extension=order)
        else:
            _el(order_el, "id", nullFlavor="UNK")
        _el(order_el, "ps3-20:accessionNumber", root=acc_root, extension=accession)

    event = _el(_el(root, "documentationOf"), "serviceEvent", classCode="ACT")
    _el(event, "id", root=report.study_uid)
    modality_codes = [Code(code=m, system=DCM, display=_MODALITY_DISPLAY.get(m, m)) for m in report.modalities]
    # without a LOINC procedure code the modality still goes in translations (nullFlavor OTH allows them)
    ev_code = (
        _code(event, "code", proc_code, codeSystemName="LOINC") if proc_code else _el(event, "code", nullFlavor="OTH")
    )
    for mc in modality_codes:
        tr = _code(ev_code, "translation", mc, codeSystemName="DCM")
        qual = _el(tr, "qualifier")
        _el(qual, "name", code="121139", displayName="Modalité d'imagerie", codeSystem=DCM, codeSystemName="DCM")
    ev_time = _el(event, "effectiveTime")
    _el(ev_time, "low", value=_ts(study_time))
    perf = _el(event, "performer", typeCode="PRF")
    _assigned(perf, "assignedEntity", author, site)

    if replaces:
        related = _el(root, "relatedDocument", typeCode="RPLC")
        _el(_el(related, "parentDocument"), "id", root=replaces)

    enc = _el(_el(root, "componentOf"), "encompassingEncounter")
    _el(_el(enc, "effectiveTime"), "low", value=_ts(study_time))
    facility = _el(_el(enc, "location"), "healthCareFacility")
    if site.facility_type is not None:
        _code(facility, "code", site.facility_type)
    else:
        _el(facility, "code", nullFlavor="UNK")

    body = _el(_el(root, "component"), "structuredBody")
    acte = _section(
        body,
        ("1.2.840.10008.9.3", "1.2.250.1.213.1.1.2.206"),
        Code(code="55111-9", system=LOINC, display="Description de l'acte d'imagerie"),
        "Technique d'imagerie",
        doc_uid=sop_uid,
    )
    # The SR's indication and history go to this narrative: the volet's FR-DICOM-informations-cliniques
    # section demands coded history observations (11348-0, 47519-4, 64100-1) that an SR does not carry.
    lines = [f"Indication : {p}" for p in report.request]
    lines += [f"Contexte clinique : {p}" for p in report.clinical]
    lines += report.procedure
    lines.append("Modalité : " + ", ".join(m.display for m in modality_codes))
    lines.append(f"Localisation anatomique : {report.region[1]}")
    _paragraphs(acte, lines)
    proc = _el(_el(acte, "entry"), "procedure", classCode="PROC", moodCode="EVN")
    _el(proc, "templateId", root="1.2.840.10008.9.14")
    _el(proc, "templateId", root="1.2.250.1.213.1.1.3.153")
    _el(proc, "id", root=_stable_oid(sop_uid, "procedure"))
    if proc_code is not None:
        _code(proc, "code", proc_code, codeSystemName="LOINC")
    else:
        _el(proc, "code", nullFlavor="UNK")
    _el(proc, "effectiveTime", value=_ts(study_time))
    for mc in modality_codes:
        _code(proc, "methodCode", mc, codeSystemName="DCM")
    site_el = _code(proc, "targetSiteCode", Code(code=report.region[0], system=SNOMED, display=report.region[1]))
    site_el.set(f"{{{XSI}}}type", "CD")

    cat = _section(
        acte,
        ("2.16.840.1.113883.10.20.6.1.1", "1.2.250.1.213.1.1.2.217"),
        Code(code="121181", system=DCM, display="Catalogue d'objets DICOM"),
        "Catalogue d'objets DICOM",
        [f"Examen {report.study_uid} : {len(report.series)} série(s) référencée(s)"],
        doc_uid=sop_uid,
    )
    if report.series:
        study_act = _el(_el(cat, "entry"), "act", classCode="ACT", moodCode="EVN")
        _el(study_act, "templateId", root="1.2.840.10008.9.16")
        _el(study_act, "templateId", root="1.2.250.1.213.1.1.3.155")
        _el(study_act, "id", root=report.study_uid)
        _el(study_act, "code", code="113014", displayName="Examen", codeSystem=DCM, codeSystemName="DCM")
        _el(study_act, "effectiveTime", value=_ts(study_time))
        for series in report.series:
            s_act = _el(_el(study_act, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
            _el(s_act, "templateId", root="1.2.840.10008.9.17")
            _el(s_act, "templateId", root="1.2.250.1.213.1.1.3.156")
            _el(s_act, "id", root=series.uid)
            s_code = _el(s_act, "code", code="113015", displayName="Séries", codeSystem=DCM, codeSystemName="DCM")
            modality = next(
                (m for cls, _ in series.instances if (m := _MODALITY_BY_SOP_CLASS.get(cls))), report.modalities[0]
            )
            qual = _el(s_code, "qualifier")
            _el(qual, "name", code="121139", displayName="Modalité", codeSystem=DCM, codeSystemName="DCM")
            _el(qual, "value", code=modality, displayName=_MODALITY_DISPLAY.get(modality, modality), codeSystem=DCM)
            for cls, inst in series.instances[:1]:
                obs = _el(
                    _el(s_act, "entryRelationship", typeCode="COMP"), "observation", classCode="DGIMG", moodCode="EVN"
                )
                _el(obs, "templateId", root="1.2.840.10008.9.18")
                _el(obs, "templateId", root="1.2.250.1.213.1.1.3.157")
                _el(obs, "id", root=inst)
                _el(obs, "code", code=cls, codeSystem=DICOM_UID_SYSTEM, codeSystemName="DCMUID")

    if report.findings:
        _section(
            body,
            ("2.16.840.1.113883.10.20.6.1.2", "1.2.250.1.213.1.1.2.208"),
            Code(code="59776-5", system=LOINC, display="Résultats de l'acte"),
            "Résultats",
            report.findings,
            doc_uid=sop_uid,
        )
    _section(
        body,
        ("1.2.840.10008.9.5", "1.2.250.1.213.1.1.2.209"),
        Code(code="19005-8", system=LOINC, display="Conclusions"),
        "Conclusion",
        report.conclusion,
        doc_uid=sop_uid,
    )
    xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    header = {
        "version": version,
        "replaces": replaces,
        "title": title,
        "created": created,
        "study_time": study_time,
        "author": author,
        "set_id": set_id,
        "accession": (accession, acc_root),
        "order": (order, order_root),
    }
    return xml, header


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
    """The IMG-CR-IMG document of an SR already read by :func:`read_report`.

    ``previous`` is the last report published for the same study (:func:`report_series_key`): a new
    SR then replaces it (CDA ``relatedDocument RPLC``, same setId, versionNumber + 1).

    The CDA header needs what DICOM does not carry: the structure (IdNat_Struct), its facility type
    and practice setting come from the site configuration; the legal authenticator's RPPS from the
    SR's Verifying Observer Identification Code Sequence (scheme ``RPPS``). Missing ones are refused.
    """
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
    xml, header = build_cda(ds, report, patient=patient, site=site, now=now, previous=previous)
    refs = [ReferenceId(value=report.study_uid, type="urn:ihe:iti:xds:2016:studyInstanceUID")]
    accession, acc_root = header["accession"]
    if accession:
        refs.append(ReferenceId(value=accession, type="urn:ihe:iti:xds:2013:accession", assigner=acc_root))
    order, order_root = header["order"]
    if order:
        refs.append(ReferenceId(value=order, type="urn:ihe:iti:xds:2013:order", assigner=order_root))
    author: Author = header["author"]
    return Document(
        unique_id=required_uid(ds, "SOPInstanceUID"),
        set_id=header["set_id"],
        version=header["version"],
        action=Action.REPLACE if header["replaces"] else Action.PUBLISH,
        replaces=header["replaces"],
        patient=patient,
        type_code=REPORT_TYPE,
        class_code=REPORT_CLASS,
        format_code=REPORT_FORMAT,
        mime_type=REPORT_MIME,
        title=header["title"],
        creation_time=header["created"],
        service_start=header["study_time"],
        author=author,
        legal_authenticator=author,
        facility_type=site.facility_type,
        practice_setting=site.practice_setting,
        confidentiality=(confidentiality_code("N"),),
        reference_ids=tuple(refs),
        provenance=provenance,
        content=xml,
    )
