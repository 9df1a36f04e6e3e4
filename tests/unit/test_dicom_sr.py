"""SR → IMG-CR-IMG 2024.01 (mappings/imaging_report.py): conformant CDA, or a refusal naming why."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from lxml import etree
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from passerelle.errors import IdentityError, MappingError
from passerelle.mappings.dicom.common import DicomSite
from passerelle.mappings.dicom.kos import PreviousManifest, map_dicom, series_key
from passerelle.mappings.document import INS_NIR_TEST_OID, Action, Author, Code, Document, Provenance
from tests.support.conformance import IMG_CR_IMG_2024, failed_assertions, run_schematrons, validate_xsd
from tests.support.dicom_samples import TEST_INS, _code, make_sr

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
SITE = DicomSite(
    organisation=Author(organisation_id="1750100125", organisation_name="Centre d'imagerie de test"),
    facility_type=Code(code="SA01", system="1.2.250.1.71.4.2.4", display="Etablissement public de santé"),
    practice_setting=Code(code="ETABLISSEMENT", system="1.2.250.1.213.1.1.4.9", display="Etablissement de santé"),
)
NS = {"h": "urn:hl7-org:v3"}


def _map(raw: bytes, *, site: DicomSite = SITE, patient_id_map: dict[str, tuple[str, str]] | None = None) -> Document:
    return map_dicom(
        raw,
        now=NOW,
        test_environment=True,
        patient_id_map=patient_id_map,
        provenance=Provenance(channel="dicom"),
        site=site,
    )


def _with_loinc_procedure(ds: Dataset) -> None:
    ds.ReferencedRequestSequence[0].RequestedProcedureCodeSequence = Sequence([_code("24590-2", "LN", "RM genou")])


def test_sr_becomes_img_cr_img_metadata() -> None:
    raw = make_sr()
    doc = _map(raw)
    assert (doc.type_code.code, doc.type_code.system) == ("18748-4", "2.16.840.1.113883.6.1")
    assert (doc.class_code.code, doc.class_code.system) == ("10", "1.2.250.1.213.1.1.4.1")
    assert doc.format_code.code == "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"
    assert doc.mime_type == "text/xml"
    assert (doc.patient.ins, doc.patient.ins_oid) == (TEST_INS, INS_NIR_TEST_OID)
    assert doc.legal_authenticator is not None and doc.legal_authenticator.person_id == "801234567897"
    assert doc.author.organisation_id == "1750100125"
    types = {r.type for r in doc.reference_ids}
    assert {"urn:ihe:iti:xds:2016:studyInstanceUID", "urn:ihe:iti:xds:2013:accession"} <= types
    cda = etree.fromstring(doc.content)
    assert cda.find("h:id", NS).get("root") == doc.unique_id
    assert cda.find("h:setId", NS).get("root") == doc.set_id
    patient_id = cda.find("h:recordTarget/h:patientRole/h:id", NS)
    assert (patient_id.get("root"), patient_id.get("extension")) == (INS_NIR_TEST_OID, TEST_INS)
    conclusion = cda.xpath("//h:section[h:templateId/@root='1.2.250.1.213.1.1.2.209']/h:text//text()", namespaces=NS)
    assert "Épanchement articulaire isolé" in " ".join(conclusion)
    method = cda.xpath("//h:procedure/h:methodCode/@code", namespaces=NS)
    site = cda.xpath("//h:procedure/h:targetSiteCode/@code", namespaces=NS)
    assert (method, site) == (["MR"], ["361291001"])


def test_same_sr_maps_to_the_same_bytes() -> None:
    raw = make_sr()
    assert _map(raw).content == _map(raw).content


@pytest.mark.parametrize("edit", [None, _with_loinc_procedure], ids=["no-procedure-code", "loinc-procedure-code"])
def test_generated_cda_is_conformant(edit) -> None:  # type: ignore[no-untyped-def]
    doc = _map(make_sr(edit=edit))
    assert validate_xsd(doc.content) == []
    reports = run_schematrons(doc.content, IMG_CR_IMG_2024)
    assert failed_assertions(reports) == []


# --- refusals, each with its reason --------------------------------------------------------------


def _drop_conclusion(ds: Dataset) -> None:
    ds.ContentSequence = Sequence([i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue != "121076"])


def _unverified(ds: Dataset) -> None:
    ds.VerificationFlag = "UNVERIFIED"
    del ds.VerifyingObserverSequence


def _partial(ds: Dataset) -> None:
    ds.CompletionFlag = "PARTIAL"


def _no_evidence(ds: Dataset) -> None:
    del ds.CurrentRequestedProcedureEvidenceSequence


def _no_region(ds: Dataset) -> None:
    for section in ds.ContentSequence:
        section.ContentSequence = Sequence([i for i in section.ContentSequence if i.ValueType != "CODE"])


def _no_text(ds: Dataset) -> None:
    for section in ds.ContentSequence:
        section.ContentSequence = Sequence()


def _no_rpps(ds: Dataset) -> None:
    del ds.VerifyingObserverSequence[0].VerifyingObserverIdentificationCodeSequence


def _measurement(ds: Dataset) -> None:
    ds.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_drop_conclusion, "no conclusion"),
        (_unverified, "not verified"),
        (_partial, "partial"),
        (_no_evidence, "modality"),
        (_no_region, "anatomic region"),
        (_no_text, "no text content"),
        (_no_rpps, "RPPS"),
        (_measurement, "measurement-only TID 1500"),
    ],
)
def test_unpublishable_sr_is_refused_with_its_reason(edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingError, match=reason) as exc:
        _map(make_sr(edit=edit))
    assert TEST_INS not in str(exc.value) and "PAT-TROIS" not in str(exc.value)


def test_body_part_examined_gives_the_region() -> None:
    def edit(ds: Dataset) -> None:
        _no_region(ds)
        ds.BodyPartExamined = "CHEST"

    cda = etree.fromstring(_map(make_sr(edit=edit)).content)
    assert cda.xpath("//h:procedure/h:targetSiteCode/@code", namespaces=NS) == ["302551006"]


def test_site_not_configured_is_refused() -> None:
    with pytest.raises(MappingError, match="site configuration lacks"):
        _map(make_sr(), site=DicomSite())


def test_sr_without_ins_is_an_identity_error() -> None:
    def edit(ds: Dataset) -> None:
        ds.PatientID = "IPP-42"
        ds.IssuerOfPatientID = "HOPITAL-TEST"

    with pytest.raises(IdentityError):
        _map(make_sr(edit=edit))
    assert _map(make_sr(edit=edit), patient_id_map={"IPP-42": (TEST_INS, INS_NIR_TEST_OID)}).patient.ins == TEST_INS


CORPUS_SR_REASONS = {
    "dicom/sr/highdicom/sr_document.dcm": "measurement-only TID 1500",
    "dicom/sr/highdicom/sr_document_with_multiple_groups.dcm": "measurement-only TID 1500",
    "dicom/sr/pydicom/reportsi.dcm": "partial",
    "dicom/sr/pydicom/reportsi_with_empty_number_tags.dcm": "partial",
    "dicom/sr/pydicom/test-SR.dcm": "no conclusion",
}


@pytest.mark.parametrize(("name", "reason"), sorted(CORPUS_SR_REASONS.items()))
def test_corpus_srs_are_refused_with_a_clear_reason(corpus_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(MappingError, match=reason):
        _map((corpus_dir / name).read_bytes())


def test_corrected_sr_replaces_the_previous_report_and_stays_conformant() -> None:
    study = "1.2.826.0.1.3680043.10.543.88"
    first = _map(make_sr(study))
    raw = make_sr(study)
    ds = pydicom.dcmread(io.BytesIO(raw))
    assert series_key(ds) == f"report:{study}"
    second = map_dicom(
        raw,
        now=NOW,
        test_environment=True,
        patient_id_map=None,
        provenance=Provenance(),
        site=SITE,
        previous=PreviousManifest(first.unique_id, first.set_id, first.version),
    )
    assert (second.action, second.replaces, second.set_id, second.version) == (
        Action.REPLACE,
        first.unique_id,
        first.set_id,
        2,
    )
    cda = etree.fromstring(second.content)
    assert cda.xpath("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id/@root", namespaces=NS) == [
        first.unique_id
    ]
    assert cda.find("h:versionNumber", NS).get("value") == "2"
    assert validate_xsd(second.content) == []
    assert failed_assertions(run_schematrons(second.content, IMG_CR_IMG_2024)) == []
