"""KOS manifest → Document (mappings/dicom.py): metadata, identity, replacement, refusals."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from passerelle.errors import IdentityError, MappingError, ParseError
from passerelle.mappings.dicom.common import DicomSite
from passerelle.mappings.dicom.kos import PreviousManifest, map_dicom, series_key
from passerelle.mappings.document import (
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    Action,
    Author,
    Code,
    Document,
    Provenance,
)
from passerelle.mappings.identity.ins import with_key
from tests.support.dicom_samples import TEST_INS, kos_dataset, make_kos, to_part10

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
PROV = Provenance(channel="dicom", sender="PACS_TEST", message_id="x")
DRIMBOX_KOS = "dicom/kos/fr-drimbox/ko.dcm"
XDM_KOS = "xds/fr-drimbox-xdm/KA202401/IHE_XDM/SS000001/KOS_1_1.DCM"


def _map(
    raw: bytes,
    *,
    test_environment: bool = True,
    patient_id_map: Mapping[str, tuple[str, str]] | None = None,
    previous: PreviousManifest | None = None,
    site: DicomSite | None = None,
) -> Document:
    return map_dicom(
        raw,
        now=NOW,
        test_environment=test_environment,
        patient_id_map=patient_id_map,
        provenance=PROV,
        previous=previous,
        site=site,
    )


# --- the DRIM-M manifest of the corpus ------------------------------------------------------------


def test_drimbox_kos_maps_to_imaging_manifest(corpus_dir: Path) -> None:
    raw = (corpus_dir / DRIMBOX_KOS).read_bytes()
    doc = _map(raw)

    assert doc.unique_id == "1.3.2.751468943.3.1234.56838.231114144457.1.1.1"
    assert doc.action is Action.PUBLISH and doc.version == 1 and doc.replaces == ""
    assert doc.mime_type == "application/dicom"
    assert (doc.format_code.code, doc.format_code.system) == ("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1")
    assert (doc.class_code.code, doc.class_code.system) == ("31", "1.2.250.1.213.1.1.4.1")
    assert (doc.type_code.code, doc.type_code.system) == ("IMG-KOS", "1.2.250.1.213.1.1.4.12")
    # the issuer is the bare namespace ASIP-SANTE-INS-NIR; the qualifiers sequence says the test OID
    assert (doc.patient.ins, doc.patient.ins_oid) == ("162018885045327", INS_NIR_TEST_OID)
    assert doc.patient.xds_patient_id == "162018885045327^^^&1.2.250.1.213.1.4.10&ISO^NH"
    # Content Date/Time with Timezone Offset From UTC +0200
    assert doc.creation_time == datetime(2023, 11, 14, 14, 44, 57, tzinfo=timezone(timedelta(hours=2)))
    assert doc.service_start is not None and doc.service_start.date().isoformat() == "2022-12-15"
    refs = {r.type: r for r in doc.reference_ids}
    assert refs["urn:ihe:iti:xds:2016:studyInstanceUID"].value == (
        "1.3.6.1.4.1.5962.99.1.3711725607.829148806.1687338938407.3.116"
    )
    assert refs["urn:ihe:iti:xds:2013:accession"].value == "7252295367250016"
    assert refs["urn:ihe:iti:xds:2013:accession"].assigner == "1.2.840.113619.6.196"
    assert refs["urn:ihe:iti:xds:2013:order"].value == "12989855966"
    # content is the file as received; same hash and size as the DRIM-M ITI-41 publication of it
    assert doc.content == raw
    assert doc.sha1 == "58408c116b51497c0f2084c90da3c85c7098455a" and doc.size == 8450
    assert doc.provenance == PROV


def test_drimbox_kos_test_ins_refused_in_production(corpus_dir: Path) -> None:
    raw = (corpus_dir / DRIMBOX_KOS).read_bytes()
    with pytest.raises(IdentityError, match=r"^identity not qualified: ") as exc:
        _map(raw, test_environment=False)
    assert "162018885045327" not in str(exc.value)


def test_xdm_kos_maps(corpus_dir: Path) -> None:
    doc = _map((corpus_dir / XDM_KOS).read_bytes())
    assert doc.unique_id == "1.3.2.751468943.3.1234.99352.240116151112.1.1.1"
    assert doc.patient.ins_oid == INS_NIR_TEST_OID


# --- identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("test_environment", "oid"), [(False, INS_NIR_OID), (True, INS_NIR_TEST_OID)])
def test_issuer_name_without_oid_resolves_by_environment(test_environment: bool, oid: str) -> None:
    doc = _map(make_kos(), test_environment=test_environment)
    assert (doc.patient.ins, doc.patient.ins_oid) == (TEST_INS, oid)
    assert doc.patient.local_id == ""
    assert (doc.patient.family, doc.patient.given, doc.patient.sex) == ("PAT-TROIS", "DOMINIQUE", "F")


def test_issuer_given_as_oid() -> None:
    def edit(ds: Dataset) -> None:
        ds.IssuerOfPatientID = INS_NIR_OID

    assert _map(make_kos(edit=edit), test_environment=False).patient.ins_oid == INS_NIR_OID


def test_issuer_in_hd_form() -> None:
    def edit(ds: Dataset) -> None:
        ds.IssuerOfPatientID = f"ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO"

    assert _map(make_kos(edit=edit), test_environment=False).patient.ins_oid == INS_NIR_OID


def test_issuer_qualifiers_universal_entity_id() -> None:
    def edit(ds: Dataset) -> None:
        ds.IssuerOfPatientID = ""
        q = Dataset()
        q.UniversalEntityID = INS_NIR_OID
        q.UniversalEntityIDType = "ISO"
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([q])

    assert _map(make_kos(edit=edit), test_environment=False).patient.ins_oid == INS_NIR_OID


def test_issuer_name_and_oid_disagree() -> None:
    def edit(ds: Dataset) -> None:
        ds.IssuerOfPatientID = "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.9&ISO"

    with pytest.raises(IdentityError, match="disagree"):
        _map(make_kos(edit=edit))


def test_ins_in_other_patient_ids() -> None:
    def edit(ds: Dataset) -> None:
        ds.PatientID = "IPP-42"
        ds.IssuerOfPatientID = "HOPITAL-TEST"
        other = Dataset()
        other.PatientID = TEST_INS
        other.IssuerOfPatientID = "ASIP-SANTE-INS-NIR"
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([other])

    patient = _map(make_kos(edit=edit)).patient
    assert (patient.ins, patient.ins_oid, patient.local_id) == (TEST_INS, INS_NIR_TEST_OID, "IPP-42")


def _local_id(ds: Dataset) -> None:
    ds.PatientID = "IPP-42"
    ds.IssuerOfPatientID = "HOPITAL-TEST"


def test_local_patient_id_mapped_to_ins() -> None:
    mapping = {"IPP-42^^^HOPITAL-TEST": (TEST_INS, INS_NIR_TEST_OID)}
    patient = _map(make_kos(edit=_local_id), patient_id_map=mapping).patient
    assert (patient.ins, patient.ins_oid, patient.local_id) == (TEST_INS, INS_NIR_TEST_OID, "IPP-42")
    # an unqualified key works too
    assert _map(make_kos(edit=_local_id), patient_id_map={"IPP-42": (TEST_INS, INS_NIR_TEST_OID)}).patient.ins


def test_local_patient_id_without_mapping_is_refused() -> None:
    with pytest.raises(IdentityError, match=r"^identity not qualified: ") as exc:
        _map(make_kos(edit=_local_id), patient_id_map={"OTHER": (TEST_INS, INS_NIR_TEST_OID)})
    assert "IPP-42" not in str(exc.value)


def test_mapped_test_ins_refused_in_production() -> None:
    with pytest.raises(IdentityError):
        _map(make_kos(edit=_local_id), test_environment=False, patient_id_map={"IPP-42": (TEST_INS, INS_NIR_TEST_OID)})


def test_ins_with_wrong_key_is_refused() -> None:
    bad = TEST_INS[:13] + f"{(int(TEST_INS[13:]) + 1) % 100:02d}"

    def edit(ds: Dataset) -> None:
        ds.PatientID = bad

    with pytest.raises(IdentityError, match="key"):
        _map(make_kos(edit=edit))


def test_no_patient_id_is_refused() -> None:
    def edit(ds: Dataset) -> None:
        ds.PatientID = ""

    with pytest.raises(IdentityError):
        _map(make_kos(edit=edit))


# --- manifest rules -------------------------------------------------------------------------------


def test_two_studies_in_one_manifest_is_refused() -> None:
    def edit(ds: Dataset) -> None:
        extra = kos_dataset().CurrentRequestedProcedureEvidenceSequence[0]
        ds.CurrentRequestedProcedureEvidenceSequence.append(extra)

    with pytest.raises(MappingError, match="2 studies"):
        _map(make_kos(edit=edit))


def test_manifest_without_study_is_refused() -> None:
    def edit(ds: Dataset) -> None:
        ds.CurrentRequestedProcedureEvidenceSequence = Sequence()

    with pytest.raises(MappingError, match="no study"):
        _map(make_kos(edit=edit))


def test_rejection_note_is_not_a_manifest() -> None:
    def edit(ds: Dataset) -> None:
        ds.ConceptNameCodeSequence[0].CodeValue = "113001"
        ds.ConceptNameCodeSequence[0].CodeMeaning = "Rejected for Quality Reasons"

    with pytest.raises(MappingError, match="113001"):
        _map(make_kos(edit=edit))


def test_study_changed_replaces_previous_manifest() -> None:
    study = "1.2.826.0.1.3680043.10.543.77"
    first = _map(make_kos(study))
    second = _map(
        make_kos(study),
        previous=PreviousManifest(unique_id=first.unique_id, set_id=first.set_id, version=first.version),
    )
    assert second.unique_id != first.unique_id
    assert (second.action, second.replaces, second.set_id, second.version) == (
        Action.REPLACE,
        first.unique_id,
        first.set_id,
        2,
    )


def test_same_manifest_again_is_not_a_replacement() -> None:
    raw = make_kos()
    first = _map(raw)
    again = _map(raw, previous=PreviousManifest(first.unique_id, first.set_id, first.version))
    assert (again.action, again.version, again.replaces) == (Action.PUBLISH, 1, "")


def test_times_without_offset_use_the_site_zone() -> None:
    def edit(ds: Dataset) -> None:
        del ds.TimezoneOffsetFromUTC

    doc = _map(make_kos(edit=edit))
    assert doc.creation_time.utcoffset() == timedelta(hours=1)  # Europe/Paris in March (winter time)
    doc = _map(make_kos(edit=edit), site=DicomSite(local_tz=UTC))
    assert doc.creation_time == datetime(2026, 3, 11, 8, 45, tzinfo=UTC)


def test_missing_content_date_falls_back_to_instance_creation_then_now() -> None:
    def edit(ds: Dataset) -> None:
        del ds.ContentDate
        del ds.ContentTime
        ds.InstanceCreationDate = "20260301"

    assert _map(make_kos(edit=edit)).creation_time.date().isoformat() == "2026-03-01"

    def edit2(ds: Dataset) -> None:
        edit(ds)
        del ds.InstanceCreationDate
        del ds.InstanceCreationTime

    assert _map(make_kos(edit=edit2)).creation_time == NOW


def test_bad_date_is_a_parse_error() -> None:
    def edit(ds: Dataset) -> None:
        ds.ContentDate = "2026-03-11"

    with pytest.raises(ParseError):
        _map(make_kos(edit=edit))


def test_site_organisation_is_the_author() -> None:
    site = DicomSite(
        organisation=Author(organisation_id="1750100125", organisation_name="Centre d'imagerie test"),
        facility_type=Code(code="SA01", system="1.2.250.1.71.4.2.4"),
        practice_setting=Code(code="ETABLISSEMENT", system="1.2.250.1.213.1.1.4.9"),
    )
    doc = _map(make_kos(), site=site)
    assert doc.author.organisation_id == "1750100125"
    assert doc.author.organisation_name == "Centre d'imagerie test"
    assert doc.facility_type == site.facility_type and doc.practice_setting == site.practice_setting


def test_polyglot_preamble_is_zeroed_in_content() -> None:
    ds = kos_dataset()
    raw = to_part10(ds, preamble=b"MZ" + bytes(126))
    doc = _map(raw)
    assert doc.content[:128] == bytes(128)
    assert doc.content[128:] == raw[128:]


def test_production_ins_accepted_in_test_environment() -> None:
    ins = with_key("1840275123456")

    def edit(ds: Dataset) -> None:
        ds.PatientID = ins
        ds.IssuerOfPatientID = INS_NIR_OID

    assert _map(make_kos(edit=edit), test_environment=True).patient.ins_oid == INS_NIR_OID


def test_series_key_of_a_manifest_is_its_study() -> None:
    study = "1.2.826.0.1.3680043.10.543.99"
    ds = pydicom.dcmread(io.BytesIO(make_kos(study)))
    assert series_key(ds) == f"study:{study}"
