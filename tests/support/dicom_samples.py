"""Synthetic DICOM documents for tests: a DRIM-M style KOS manifest and a Basic Text SR report.

Test patients only: the INS is an ANS test NIR (valid key) under the test OID 1.2.250.1.213.1.4.10.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from passerelle.mappings.identity.ins import with_key

TEST_INS = with_key("2790351215189")  # PAT-TROIS DOMINIQUE, ANS test patient
TEST_INS_OID = "1.2.250.1.213.1.4.10"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_ROOT = "1.2.826.0.1.3680043.10.543."


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _issuer(uid: str) -> Sequence:
    item = Dataset()
    item.UniversalEntityID = uid
    item.UniversalEntityIDType = "ISO"
    return Sequence([item])


def _common(ds: Dataset, sop_class: str, study_uid: str, modality: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.StudyDate = "20260310"
    ds.StudyTime = "101500"
    ds.ContentDate = "20260311"
    ds.ContentTime = "084500"
    ds.InstanceCreationDate = "20260311"
    ds.InstanceCreationTime = "084500"
    ds.TimezoneOffsetFromUTC = "+0100"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "Passerelle tests"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "PAT-TROIS^DOMINIQUE"
    ds.PatientID = TEST_INS
    ds.IssuerOfPatientID = "ASIP-SANTE-INS-NIR"
    ds.PatientBirthDate = "19790328"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.StudyID = "1"
    ds.SeriesNumber = "99"
    ds.InstanceNumber = "1"
    ds.ReferencedPerformedProcedureStepSequence = Sequence()


def _request(study_uid: str, accession: str) -> Sequence:
    req = Dataset()
    req.StudyInstanceUID = study_uid
    req.AccessionNumber = accession
    req.IssuerOfAccessionNumberSequence = _issuer("1.2.250.1.999.1.2")
    req.ReferencedStudySequence = Sequence()
    req.RequestedProcedureDescription = ""
    req.RequestedProcedureCodeSequence = Sequence()
    req.RequestedProcedureID = ""
    req.PlacerOrderNumberImagingServiceRequest = "ORD-0001"
    req.OrderPlacerIdentifierSequence = _issuer("1.2.250.1.999.1.3")
    req.FillerOrderNumberImagingServiceRequest = ""
    return Sequence([req])


def _evidence(study_uid: str, n_instances: int = 3) -> Sequence:
    series = Dataset()
    series.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    series.RetrieveURL = "https://pacs.example.invalid/dicomweb/studies"
    refs = []
    for _ in range(n_instances):
        ref = Dataset()
        ref.ReferencedSOPClassUID = MR_IMAGE
        ref.ReferencedSOPInstanceUID = generate_uid(prefix=UID_ROOT)
        refs.append(ref)
    series.ReferencedSOPSequence = Sequence(refs)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = Sequence([series])
    return Sequence([study])


def to_part10(ds: Dataset, *, preamble: bytes = bytes(128)) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = preamble
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def kos_dataset(study_uid: str | None = None, *, accession: str = "ACC-0001") -> Dataset:
    """A DRIM-M style manifest: INS in PatientID, issuer name without OID, one study, one series."""
    study_uid = study_uid or generate_uid(prefix=UID_ROOT)
    ds = Dataset()
    _common(ds, KOS, study_uid, "KO")
    ds.SeriesDate = "20260311"
    ds.SeriesTime = "084500"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("113030", "DCM", "Manifest")])
    ds.ContinuityOfContent = "SEPARATE"
    tmpl = Dataset()
    tmpl.MappingResource = "DCMR"
    tmpl.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = Sequence([tmpl])
    ds.ReferencedRequestSequence = _request(study_uid, accession)
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study_uid)
    content = []
    for ref in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        r = Dataset()
        r.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
        r.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
        item.ReferencedSOPSequence = Sequence([r])
        content.append(item)
    ds.ContentSequence = Sequence(content)
    return ds


def make_kos(study_uid: str | None = None, *, edit: Callable[[Dataset], None] | None = None) -> bytes:
    ds = kos_dataset(study_uid)
    if edit is not None:
        edit(ds)
    return to_part10(ds)


REPORT_SECTIONS = (
    ("121060", "DCM", "History", "Douleur du genou droit après une chute."),
    ("121064", "DCM", "Current Procedure Descriptions", "IRM du genou droit sans injection."),
    ("121071", "DCM", "Finding", "Pas de lésion méniscale. Épanchement articulaire modéré."),
    ("121076", "DCM", "Conclusion", "Épanchement articulaire isolé, pas de lésion traumatique."),
)


def sr_dataset(study_uid: str | None = None, *, sop_class: str = BASIC_TEXT_SR) -> Dataset:
    """A Basic Text SR imaging report (TID 2000 style headings with TEXT children)."""
    study_uid = study_uid or generate_uid(prefix=UID_ROOT)
    ds = Dataset()
    _common(ds, sop_class, study_uid, "SR")
    ds.AccessionNumber = "ACC-0001"
    ds.IssuerOfAccessionNumberSequence = _issuer("1.2.250.1.999.1.2")
    ds.StudyDescription = "IRM genou droit"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = "IMAGERIE^JEAN"
    verifier.VerifyingOrganization = "Centre d'imagerie de test"
    verifier.VerificationDateTime = "20260311084500"
    ident = _code("801234567897", "RPPS", "Identifiant RPPS")
    verifier.VerifyingObserverIdentificationCodeSequence = Sequence([ident])
    ds.VerifyingObserverSequence = Sequence([verifier])
    ds.ReferencedRequestSequence = _request(study_uid, "ACC-0001")
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study_uid, 1)
    content = []
    for value, scheme, meaning, body in REPORT_SECTIONS:
        section = Dataset()
        section.RelationshipType = "CONTAINS"
        section.ValueType = "CONTAINER"
        section.ConceptNameCodeSequence = Sequence([_code(value, scheme, meaning)])
        section.ContinuityOfContent = "SEPARATE"
        txt = Dataset()
        txt.RelationshipType = "CONTAINS"
        txt.ValueType = "TEXT"
        txt.ConceptNameCodeSequence = Sequence([_code(value, scheme, meaning)])
        txt.TextValue = body
        children = [txt]
        if value == "121064":
            site = Dataset()
            site.RelationshipType = "CONTAINS"
            site.ValueType = "CODE"
            site.ConceptNameCodeSequence = Sequence([_code("363698007", "SCT", "Finding Site")])
            site.ConceptCodeSequence = Sequence([_code("361291001", "SCT", "région entière du genou")])
            children.append(site)
        section.ContentSequence = Sequence(children)
        content.append(section)
    ds.ContentSequence = Sequence(content)
    return ds


def make_sr(study_uid: str | None = None, *, edit: Callable[[Dataset], None] | None = None) -> bytes:
    ds = sr_dataset(study_uid)
    if edit is not None:
        edit(ds)
    return to_part10(ds)
