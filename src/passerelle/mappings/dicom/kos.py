"""DICOM instance → :class:`Document` (docs/interop-reference.md, "Imaging").

A Key Object Selection (KOS) manifest becomes an imaging-manifest document (``IMG-KOS``, class 31,
mime ``application/dicom``, content = the Part 10 file); a Structured Report becomes an IMG-CR-IMG
CDA (:mod:`passerelle.mappings.dicom.report`). Images and other SOP classes are not documents of
the national model and are refused with :class:`UnsupportedMessageError`.

Pure: the caller passes the clock (``now``), the environment, the site's identity mapping, the
previous manifest of the study (for replacement) and the site defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydicom.dataset import Dataset

from passerelle.errors import MappingError, UnsupportedMessageError
from passerelle.mappings.dicom import report as imaging_report
from passerelle.mappings.dicom import sr
from passerelle.mappings.dicom.common import (
    DOCUMENT_SOP_CLASSES,
    KOS_SOP_CLASS,
    SR_SOP_CLASSES,
    DicomSite,
    PreviousManifest,
    content_time,
    dataset_timezone,
    decode_dicom,
    encode_part10,
    patient_lane,
    person_name,
    request_ids,
    required_uid,
    resolve_patient,
    study_time,
    text,
    zero_preamble,
)
from passerelle.mappings.document import (
    CLASS_CODE_SYSTEM,
    FORMAT_DICOM_SYSTEM,
    LOCAL_TYPE_SYSTEM,
    Author,
    Code,
    Document,
    DocumentKind,
    Lineage,
    Provenance,
    confidentiality_code,
)

__all__ = [
    "DOCUMENT_SOP_CLASSES",
    "KOS_SOP_CLASS",
    "SR_SOP_CLASSES",
    "DicomSite",
    "PreviousManifest",
    "decode_dicom",
    "encode_part10",
    "manifest_study_uid",
    "map_dicom",
    "patient_lane",
    "series_key",
    "zero_preamble",
]

KOS = DocumentKind(
    type_code=Code(code="IMG-KOS", system=LOCAL_TYPE_SYSTEM, display="Référence d'objets d'un examen d'imagerie"),
    class_code=Code(code="31", system=CLASS_CODE_SYSTEM, display="Imagerie médicale"),
    format_code=Code(
        code=KOS_SOP_CLASS,
        system=FORMAT_DICOM_SYSTEM,
        display="Document de Références d'objets d'imagerie selon profil IHE RAD XDS-I",
    ),
    mime_type="application/dicom",
)
KOS_TITLE = "Référence d'objets d'un examen d'imagerie"

#: Document title of an XDS-I manifest (DCM 113030 "Manifest"). Other KOS titles are not manifests:
#: notably the IOCM rejection notes (113001, 113037, 113038, 113039), which must never be published.
MANIFEST_TITLE = ("113030", "DCM")


def map_dicom(
    raw: bytes,
    *,
    now: datetime,
    test_environment: bool,
    patient_id_map: Mapping[str, tuple[str, str]] | None,
    provenance: Provenance,
    previous: PreviousManifest | None = None,
    site: DicomSite | None = None,
) -> Document:
    """Map one DICOM Part 10 file to a document of the national model.

    ``previous`` is the last document published for the same series (the worker looks it up by
    :func:`series_key`: the study for a KOS, the study's report for an SR); a KOS or SR with another
    SOP Instance UID then replaces it (action replace, same set id, version + 1). Raises :class:`ParseError` (unreadable DICOM),
    :class:`UnsupportedMessageError` (not a KOS or SR), :class:`IdentityError` (no usable INS),
    :class:`MappingError` (readable but not publishable, with the reason).
    """
    site = site or DicomSite()
    ds = decode_dicom(raw)
    if not text(ds, "SOPClassUID"):
        raise UnsupportedMessageError(
            "no SOP Class UID: not a composite DICOM object (DICOMDIR?)", location="0008,0016"
        )
    sop_class = required_uid(ds, "SOPClassUID")
    if sop_class == KOS_SOP_CLASS:
        return _map_kos(ds, zero_preamble(raw), now, test_environment, patient_id_map, provenance, previous, site)
    if sop_class in SR_SOP_CLASSES:
        # the content first: a report that can never be published is refused for that reason
        report = sr.read_report(ds)
        patient = resolve_patient(ds, test_environment=test_environment, patient_id_map=patient_id_map)
        return imaging_report.map_structured_report(
            ds, report, patient=patient, now=now, provenance=provenance, site=site, previous=previous
        )
    raise UnsupportedMessageError(
        f"SOP class {sop_class} is not a document (only KOS manifests and SR reports are published)",
        location="0008,0016",
    )


def series_key(ds: Dataset) -> str:
    """Key of the logical series a KOS or SR belongs to, for the worker's ``previous`` lookup.

    KOS: ``study:<Study UID>`` (one manifest per study, replaced when the study changes); SR:
    ``report:<Study UID>`` (one current report per study, replaced by a corrected SR). Other
    objects: ''.
    """
    sop_class = text(ds, "SOPClassUID")
    if sop_class == KOS_SOP_CLASS:
        return f"study:{manifest_study_uid(ds)}"
    if sop_class in SR_SOP_CLASSES:
        return sr.report_series_key(ds)
    return ""


def manifest_study_uid(ds: Dataset) -> str:
    """The one study a KOS manifest references (CurrentRequestedProcedureEvidenceSequence)."""
    studies: list[str] = []
    for item in ds.get("CurrentRequestedProcedureEvidenceSequence") or ():
        uid = required_uid(item, "StudyInstanceUID")
        if uid not in studies:
            studies.append(uid)
    if not studies:
        raise MappingError("KOS references no study (empty Current Requested Procedure Evidence)", location="0040,A375")
    if len(studies) > 1:
        raise MappingError(
            f"KOS references {len(studies)} studies; a manifest must reference exactly one", location="0040,A375"
        )
    return studies[0]


def _check_manifest(ds: Dataset) -> None:
    titles: list[Dataset] = list(ds.get("ConceptNameCodeSequence") or ())
    if len(titles) != 1:
        raise MappingError("KOS has no document title (Concept Name Code Sequence)", location="0040,A043")
    code = (text(titles[0], "CodeValue"), text(titles[0], "CodingSchemeDesignator"))
    if code != MANIFEST_TITLE:
        raise MappingError(
            f"KOS title ({code[0]}, {code[1]}) is not an XDS-I manifest (113030, DCM)", location="0040,A043"
        )
    evidence = ds.get("CurrentRequestedProcedureEvidenceSequence") or ()
    if not any(
        sop
        for item in evidence
        for series in item.get("ReferencedSeriesSequence") or ()
        for sop in series.get("ReferencedSOPSequence") or ()
    ):
        raise MappingError("KOS references no instance", location="0040,A375")


def _map_kos(
    ds: Dataset,
    content: bytes,
    now: datetime,
    test_environment: bool,
    patient_id_map: Mapping[str, tuple[str, str]] | None,
    provenance: Provenance,
    previous: PreviousManifest | None,
    site: DicomSite,
) -> Document:
    sop_uid = required_uid(ds, "SOPInstanceUID")
    study_uid = manifest_study_uid(ds)
    _check_manifest(ds)
    patient = resolve_patient(ds, test_environment=test_environment, patient_id_map=patient_id_map)
    tz = dataset_timezone(ds, site.local_tz)
    return Document(
        **_lineage(sop_uid, previous).fields(),
        **KOS.fields(),
        patient=patient,
        title=KOS_TITLE,
        creation_time=content_time(ds, tz, now),
        service_start=study_time(ds, tz),
        service_stop=None,
        author=_author(ds, site),
        facility_type=site.facility_type,
        practice_setting=site.practice_setting,
        confidentiality=(confidentiality_code("N"),),
        reference_ids=request_ids(ds, study_uid).reference_ids(study_uid),
        provenance=provenance,
        content=content,
    )


def _lineage(sop_uid: str, previous: PreviousManifest | None) -> Lineage:
    if previous is None:
        return Lineage(sop_uid, sop_uid)
    if previous.unique_id != sop_uid:
        return previous.successor(sop_uid)
    # the same manifest again: same identity, the delivery key absorbs it
    return Lineage(sop_uid, previous.set_id or sop_uid, previous.version)


def _author(ds: Dataset, site: DicomSite) -> Author:
    """The configured organisation, with the performing or referring physician's name when present.

    DICOM carries no RPPS for these persons, so the person id stays empty; the device (manufacturer
    and model of the system that created the object) names the non-human author.
    """
    family, given = person_name(ds, "PerformingPhysicianName")
    if not family:
        family, given = person_name(ds, "ReferringPhysicianName")
    device = " ".join(v for v in (text(ds, "Manufacturer"), text(ds, "ManufacturerModelName")) if v)
    return site.organisation.model_copy(
        update={
            "family": site.organisation.family or family,
            "given": site.organisation.given or given,
            "device": site.organisation.device or device,
            "organisation_name": site.organisation.organisation_name or text(ds, "InstitutionName"),
        }
    )
