"""CDA header → Document on every CDA of the corpus, against the expected table
(docs/interop-reference.md: "XDS metadata", "CDA header")."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.errors import MappingError, ValidationError
from passerelle.mappings.cda.reader import map_cda, parse_ts
from passerelle.mappings.document import CLASS_CODE_SYSTEM, CONFIDENTIALITY_HL7, LOINC, Action

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
INS_TEST = ("279035121518989", "1.2.250.1.213.1.4.10")

LAB = "urn:ihe:lab:xd-lab:2008"
PDF = "urn:ihe:iti:xds-sd:pdf:2008"
IMG = "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"

# file: (unique id, type, class, format, facility type, practice setting, author IdNat_PS, org IdNat_Struct)
EXPECTED = {
    "fr-ci-sis-ans/BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml": (
        "1.2.250.1.213.1.1.1.55.2021.3.1", "11502-2", "10", PDF, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml": (
        "1.2.250.1.213.1.1.1.55.2024.1.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_CRP_non_LOINC.xml": (
        "1.2.250.1.213.1.1.1.55.2024.2.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_DEP-CCU-tout-structure.xml": (
        "1.2.250.1.213.1.1.1.55.2024.4.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_Electrophorese.xml": (
        "1.2.250.1.213.1.1.1.55.2024.5.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_Glycemie_mole.xml": (
        "1.2.250.1.213.1.1.1.55.2024.7.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_Microbiologie_V1.xml": (
        "1.2.250.1.213.1.1.1.55.2024.8.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-CR-BIO_2024.01_TSH_1.xml": (
        "1.2.250.1.213.1.1.1.55.2024.9.1", "11502-2", "10", LAB, "SA25", "AMBULATOIRE", "801234534765", "1120459876"),
    "fr-ci-sis-ans/BIO-TROD_2024.01_COVID-19.xml": (
        "1.2.250.1.213.1.1.1.59.2024.2.1", "96173-0", "10", "urn:ans:ci-sis:trod:2024", "SA33", "DEPISTAGE",
        "807655473259", "2801234567"),
    "fr-ci-sis-ans/DOC_NON_STRUCTURE_CDA-R2-N1.xml": (
        "1.3.6.1.4.1.19376.1.2.20.12345.1.1", "11502-2", "10", PDF, "SA07", "AMBULATOIRE", "801234534765",
        "1120459876"),
    "fr-ci-sis-ans/IMG-DA-IMG_2024.01_Radiographie_Scanner_Genou.xml": (
        "1.2.250.1.213.1.1.1.47.2024.5.1", "55115-0", "42", "urn:ans:ci-sis:img-da:2022", "SA01", "ETABLISSEMENT",
        "801234567897", "1120456789"),
    "fr-ci-sis-ans/IMG_CR_IMG_2024.01.xml": (
        "1.2.250.1.213.1.1.1.45.2024.1.1", "18748-4", "10", IMG, "SA08", "AMBULATOIRE", "801234560801", "1920008059"),
    "fr-ci-sis-ans/IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml": (
        "1.2.250.1.213.1.1.1.45.2024.2.1", "18748-4", "10", PDF, "SA08", "AMBULATOIRE", "801234560801", "1750803447"),
    "fr-ci-sis-ans/LDL-EES_2022.01.xml": (
        "1.2.250.1.213.1.1.1.21.2022.1.1", "18761-7", "10", "urn:asip:ci-sis:ldl-ees:2017", "SA01", "ETABLISSEMENT",
        "801234567897", "1120456789"),
    "fr-ci-sis-ans/LDL-SES_2022.01.xml": (
        "1.2.250.1.213.1.1.1.29.2022.1.1", "11490-0", "10", "urn:asip:ci-sis:ldl-ses:2017", "SA01", "ETABLISSEMENT",
        "801234567897", "1750803447"),
    "fr-drimbox/IMG_CR_IMG_2023.11_CDA-R2-Niveau-1.xml": (
        "1.2.250.1.213.1.1.1.45.2", "18748-4", "10", PDF, "SA08", "AMBULATOIRE", "801234560801", "101235555"),
}  # fmt: skip

REPLACED_UUID = "90E1C8EC-F951-4B26-A305-A34848818DD6"


def test_every_corpus_cda_is_in_the_table(corpus_dir: Path) -> None:
    found = {str(p.relative_to(corpus_dir / "cda")) for p in (corpus_dir / "cda").rglob("*.xml")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_cda_metadata(corpus_dir: Path, name: str) -> None:
    raw = (corpus_dir / "cda" / name).read_bytes()
    doc = map_cda(raw, now=NOW)
    uid, type_code, class_code, fmt, facility, practice, author, org = EXPECTED[name]
    assert doc.unique_id == uid
    assert doc.type_code.code == type_code and doc.type_code.system == LOINC
    assert doc.class_code.code == class_code and doc.class_code.system == CLASS_CODE_SYSTEM
    assert doc.format_code.code == fmt
    assert doc.mime_type == "text/xml"
    assert doc.facility_type is not None and doc.facility_type.code == facility
    assert doc.practice_setting is not None and doc.practice_setting.code == practice
    assert doc.author.person_id == author and doc.author.organisation_id == org
    assert doc.legal_authenticator is not None and doc.legal_authenticator.person_id
    assert (doc.patient.ins, doc.patient.ins_oid) == INS_TEST
    assert doc.patient.family == "PAT-TROIS" and doc.patient.given == "DOMINIQUE"
    assert doc.patient.birth_date == "19790328" and doc.patient.sex == "F"
    assert doc.patient.minor is False
    assert [(c.code, c.system) for c in doc.confidentiality] == [("N", CONFIDENTIALITY_HL7)]
    assert doc.language == "fr-FR"
    assert doc.title
    assert doc.creation_time.tzinfo is not None
    assert doc.set_id and doc.version >= 1
    assert doc.content == raw and doc.size == len(raw)


@pytest.mark.parametrize(
    "name",
    [
        "fr-ci-sis-ans/IMG_CR_IMG_2024.01.xml",
        "fr-ci-sis-ans/IMG_CR_IMG_2024.01_CDA-R2-Niveau-1.xml",
        "fr-drimbox/IMG_CR_IMG_2023.11_CDA-R2-Niveau-1.xml",
    ],
)
def test_imaging_reports_replace_and_carry_study_references(corpus_dir: Path, name: str) -> None:
    doc = map_cda((corpus_dir / "cda" / name).read_bytes(), now=NOW)
    assert doc.action is Action.REPLACE and doc.replaces == REPLACED_UUID and doc.version == 2
    kinds = {r.type for r in doc.reference_ids}
    assert kinds == {
        "urn:ihe:iti:xds:2013:order",
        "urn:ihe:iti:xds:2013:accession",
        "urn:ihe:iti:xds:2016:studyInstanceUID",
    }
    studies = [r.value for r in doc.reference_ids if r.type.endswith("studyInstanceUID")]
    assert len(studies) == 3


def test_lab_report_header_details(corpus_dir: Path) -> None:
    doc = map_cda((corpus_dir / "cda/fr-ci-sis-ans/BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), now=NOW)
    assert doc.creation_time == parse_ts("20210401171000+0100")
    assert doc.service_start == parse_ts("20210104092200+0100")
    assert doc.service_stop is not None
    assert doc.patient.local_id == "1234567890121" and doc.patient.local_id_oid == "1.2.3.4.567.8.9.10"
    assert doc.author.role is not None and doc.author.role.code == "G15_10/SM03"
    assert doc.author.family == "CAMPARINI"
    orders = [r for r in doc.reference_ids if r.type == "urn:ihe:iti:xds:2013:order"]
    assert [(r.value, r.assigner) for r in orders] == [("2014123456789", "1.2.250.1.213.1.1.9")]
    assert doc.action is Action.PUBLISH and doc.replaces == ""


def _minimal(**over: str) -> bytes:
    values = {
        "id": '<id root="1.2.250.1.999.1.1"/>',
        "code": '<code code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR"/>',
        "tpl": "",
        "birth": "20150101",
        "body": "<component><structuredBody/></component>",
        "eff": "20260101120000",
    }
    values.update(over)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <templateId root="2.16.840.1.113883.2.8.2.1"/><templateId root="1.2.250.1.213.1.1.1.1"/>{values["tpl"]}
  {values["id"]}
  {values["code"]}
  <title>T</title>
  <effectiveTime value="{values["eff"]}"/>
  <confidentialityCode code="R" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <setId root="1.2.250.1.999.1"/>
  <versionNumber value="1"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>
    <patient><name><given>A</given><family>B</family></name>
      <administrativeGenderCode code="F"/><birthTime value="{values["birth"]}"/></patient>
  </patientRole></recordTarget>
  {values["body"]}
</ClinicalDocument>""".encode()


def test_minor_is_computed_from_now_and_naive_times_are_paris_time() -> None:
    doc = map_cda(_minimal(), now=NOW)
    assert doc.patient.minor is True
    assert map_cda(_minimal(birth="20000101"), now=NOW).patient.minor is False
    assert doc.creation_time.utcoffset() is not None
    assert doc.creation_time.isoformat() == "2026-01-01T12:00:00+01:00"
    assert [c.code for c in doc.confidentiality] == ["R"]
    assert doc.facility_type is None and doc.practice_setting is None


def test_root_plus_extension_id_is_refused_for_the_dmp() -> None:
    with pytest.raises(MappingError) as err:
        map_cda(_minimal(id='<id root="1.2.250.1.999" extension="42"/>'), now=NOW)
    assert err.value.reason == "unique_id"


def test_type_outside_the_dmp_list_is_a_mapping_error() -> None:
    with pytest.raises(MappingError) as err:
        map_cda(_minimal(code='<code code="99999-9" codeSystem="2.16.840.1.113883.6.1"/>'), now=NOW)
    assert err.value.reason == "type"


def test_non_pdf_unstructured_media_types_and_unknown_media() -> None:
    body = (
        '<component><nonXMLBody><text mediaType="image/jpeg" representation="B64">AA==</text></nonXMLBody></component>'
    )
    assert map_cda(_minimal(body=body), now=NOW).format_code.code == "urn:ihe:iti-fr:xds-sd:jpeg:2010"
    bad = body.replace("image/jpeg", "application/zip")
    with pytest.raises(MappingError):
        map_cda(_minimal(body=bad), now=NOW)


def test_missing_effective_time_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        map_cda(_minimal(eff=""), now=NOW)


def test_map_cda_document_applies_the_identity_rules(corpus_dir: Path) -> None:
    from passerelle.errors import IdentityError
    from passerelle.mappings.cda.reader import map_cda_document

    raw = (corpus_dir / "cda/fr-ci-sis-ans/BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes()
    doc = map_cda_document(raw, test_environment=True, now=NOW)
    assert doc.patient.identity_status == "qualified"
    with pytest.raises(IdentityError):
        map_cda_document(raw, test_environment=False, now=NOW)


def test_cda_without_the_cisis_template_is_refused() -> None:
    raw = _minimal().replace(b'<templateId root="1.2.250.1.213.1.1.1.1"/>', b"")
    with pytest.raises(ValidationError) as err:
        map_cda(raw, now=NOW)
    assert err.value.reason == "template"


def test_invalid_or_empty_base64_body_is_refused() -> None:
    for payload in ("not*base64", "QUJD=A", ""):
        body = (
            f'<component><nonXMLBody><text mediaType="application/pdf" representation="B64">{payload}</text>'
            "</nonXMLBody></component>"
        )
        with pytest.raises(ValidationError) as err:
            map_cda(_minimal(body=body), now=NOW)
        assert err.value.reason == "body"
    ok = '<component><nonXMLBody><text mediaType="application/pdf" representation="B64">\n JVBER\n i0=\n</text></nonXMLBody></component>'
    assert map_cda(_minimal(body=ok), now=NOW).format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
