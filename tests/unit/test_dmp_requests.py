"""Every kind of document the gateway delivers becomes an ITI-41 request that independent checks accept
(stdlib MIME parsing, XSD with xop:Include resolved, DMP metadata rules, hash and size, VIHF verified by
python-xmlsec, XAdES verified by signxml with xmllint-canonicalised manifest digests); each check fails
when what it checks is broken."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree

from passerelle.adapters.dmp.credentials import load_signing_identity
from passerelle.adapters.dmp.devpki import DevPki, write_dev_pki
from passerelle.adapters.dmp.requests import DmpRequests
from passerelle.adapters.mhd import SpaceSettings
from passerelle.mappings.cda.reader import map_cda_document
from passerelle.mappings.dicom.common import DicomSite
from passerelle.mappings.dicom.kos import map_dicom
from passerelle.mappings.document import Action, Author, Code, Document, Provenance
from passerelle.mappings.hl7v2.decode import decode_message
from passerelle.mappings.hl7v2.documents import map_hl7_message
from passerelle.mappings.lab import generate, to_document
from passerelle.mappings.samples.lab import sample_lab_report
from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.mappings.xds import queries
from passerelle.mappings.xds.ns import APPROVED
from passerelle.mappings.xds.queries import StatusChange
from tests.support.dicom_samples import TEST_INS, make_sr
from tests.support.dmp_checks import Refused, body_payload, check_envelope, check_vihf, read_mtom
from tests.support.dmp_checks_xds import check_metadata, check_xades, resolve_and_validate, schema

NOW = datetime.now(UTC).replace(microsecond=0)
SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return write_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def requests(pki: DevPki) -> DmpRequests:
    space = SpaceSettings(
        url="https://dmp.test/si-dmp-server/v2/services",
        transport="dmp",
        dmp={"sign_cert_file": pki.sign_cert, "sign_key_file": pki.sign_key, "structure_id": pki.structure_id,
             "homologation_id": "BCO-465897-tmp2"},
    )  # fmt: skip
    return DmpRequests(
        space.url,
        space.dmp,
        load_signing_identity(space),
        source_id="1.2.250.1.999.1.2",
        content_type=space.content_type,
        now=lambda: datetime.now(UTC),
    )


def schemas(corpus: Path) -> Path:
    return corpus / "schemas" / "xds-ebrim-3.0"


def documents(corpus: Path) -> dict[str, Document]:
    prov = Provenance(channel="test")
    msg = decode_message((corpus / SEGUR).read_bytes())
    [oru] = map_hl7_message(msg, test_environment=True, now=NOW, provenance=prov)
    rng = random.Random(2)
    http_cda = map_cda_document(
        build_sample_cda(
            now=NOW, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng)
        ),
        test_environment=True,
        now=NOW,
        provenance=prov,
    )
    report = sample_lab_report()
    crbio = to_document(report, generate(report).cda, prov)
    kos = map_dicom(
        (corpus / "dicom/kos/fr-drimbox/ko.dcm").read_bytes(),
        now=NOW,
        test_environment=True,
        patient_id_map=None,
        provenance=prov,
    )
    site = DicomSite(
        organisation=Author(organisation_id="1120459876", organisation_name="Imagerie de test"),
        facility_type=Code(code="SA01", system="1.2.250.1.71.4.2.4", display="Etablissement public de santé"),
        practice_setting=Code(code="ETABLISSEMENT", system="1.2.250.1.213.1.1.4.9", display="Etablissement de santé"),
    )
    sr = map_dicom(
        make_sr(),
        now=NOW,
        test_environment=True,
        patient_id_map={"IPP-42": (TEST_INS, "1.2.250.1.213.1.4.10")},
        provenance=prov,
        site=site,
    )
    return {"oru-cda": oru, "http-cda": http_cda, "crbio": crbio, "kos": kos, "imaging-report": sr}


def check_all(call_body: bytes, content_type: str, corpus: Path, ca: Path) -> None:
    request = read_mtom(content_type, call_body)
    check_envelope(request.envelope, "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b", "/repository")
    vihf = check_vihf(request.envelope, x509.load_pem_x509_certificate(ca.read_bytes()), datetime.now(UTC))
    payload = body_payload(request.envelope)
    contents = resolve_and_validate(payload, request.parts, schemas(corpus))
    submission = check_metadata(payload, contents)
    assert vihf.resource_id == submission.patient_id
    check_xades(submission, x509.load_pem_x509_certificate(ca.read_bytes()), vihf.certificate)


@pytest.mark.corpus
def test_every_kind_of_document_passes_the_independent_checks(
    corpus_dir: Path, requests: DmpRequests, pki: DevPki
) -> None:
    docs = documents(corpus_dir)
    assert {d.mime_type for d in docs.values()} == {"text/xml", "application/dicom"}
    for name, doc in docs.items():
        call = requests.provide(doc)
        try:
            check_all(call.body, call.content_type, corpus_dir, pki.ca)
        except Refused as exc:  # pragma: no cover - the message names the kind and the rule
            pytest.fail(f"{name}: {exc}")
        assert doc.content in call.body  # the exact bytes travel in their own part


@pytest.mark.corpus
def test_replacement_carries_rplc_and_still_validates(corpus_dir: Path, requests: DmpRequests, pki: DevPki) -> None:
    doc = documents(corpus_dir)["http-cda"].model_copy(update={"action": Action.REPLACE, "replaces": "1.2.3.4"})
    call = requests.provide(doc, {"1.2.3.4": "urn:uuid:11111111-2222-3333-4444-555555555555"})
    check_all(call.body, call.content_type, corpus_dir, pki.ca)
    assert b"urn:ihe:iti:2007:AssociationType:RPLC" in call.body
    with pytest.raises(ValueError, match="entryUUID"):
        requests.provide(doc)


UNIQUE_ID_SCHEMES = (
    "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",  # DocumentEntry.uniqueId
    "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8",  # SubmissionSet.uniqueId
)


def unique_ids(call_body: bytes, content_type: str) -> dict[str, str]:
    """Registry object id (Document01, Signature01, SubmissionSet01) -> its uniqueId."""
    payload = body_payload(read_mtom(content_type, call_body).envelope)
    found = payload.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExternalIdentifier")
    return {
        e.get("registryObject", ""): e.get("value", "")
        for e in found
        if e.get("identificationScheme") in UNIQUE_ID_SCHEMES
    }


def test_a_resend_signs_again_under_a_new_signature_unique_id(requests: DmpRequests) -> None:
    """The document and its submission set keep their uniqueIds (a registry recognises the re-send);
    the signature, whose bytes change with its signing time, is a new document with a new uniqueId (a
    registry refuses a known uniqueId with other bytes: XDSNonIdenticalHash — the sandbox did)."""
    rng = random.Random(4)
    cda = build_sample_cda(
        now=NOW, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng)
    )
    doc = map_cda_document(cda, test_environment=True, now=NOW, provenance=Provenance(channel="test"))
    clock = [NOW]
    resend = DmpRequests(
        "https://dmp.test/si-dmp-server/v2/services", requests.dmp, requests.identity,
        source_id=requests.source_id, content_type=requests.content_type, now=lambda: clock[0],
    )  # fmt: skip
    first = resend.provide(doc)
    clock[0] = NOW + timedelta(seconds=30)
    again = resend.provide(doc)
    before, after = unique_ids(first.body, first.content_type), unique_ids(again.body, again.content_type)
    assert before["Document01"] == after["Document01"] == doc.unique_id
    assert before["SubmissionSet01"] == after["SubmissionSet01"]
    assert before["Signature01"] != after["Signature01"]
    assert f'Id="{after["Signature01"]}"'.encode() in again.body  # the ds:Signature carries it too


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda b, doc: b.replace(doc.content[-40:], doc.content[-40:-1] + b"X"), "hash of the part"),
        (lambda b, doc: b.replace(b"<saml2:NameID>", b"<saml2:NameID>x"), "VIHF signature does not verify"),
        (lambda b, doc: b.replace(b"\r\n", b"\n"), "CRLF framing"),
        (lambda b, doc: b.replace(b'name="languageCode"', b'name="languageKode"'), "slot languageCode"),
    ],
)
def test_the_checks_have_teeth(corpus_dir: Path, requests: DmpRequests, pki: DevPki, mutate, rule) -> None:  # type: ignore[no-untyped-def]
    doc = documents(corpus_dir)["http-cda"]
    call = requests.provide(doc)
    with pytest.raises(Refused) as caught:
        check_all(mutate(call.body, doc), call.content_type, corpus_dir, pki.ca)
    assert rule in caught.value.what


@pytest.mark.corpus
def test_registry_bodies_are_schema_valid(corpus_dir: Path, requests: DmpRequests) -> None:
    validator = schema(schemas(corpus_dir))
    doc = documents(corpus_dir)["oru-cda"]
    bodies = [
        queries.get_documents([doc.unique_id, "1.2.3"]),
        queries.find_documents(doc.patient),
    ]
    submission = requests.submission("2.25.7", doc.author)
    bodies.append(queries.update_availability(submission, doc.patient, "urn:uuid:1-2", APPROVED, StatusChange.DELETE))
    bodies.append(queries.update_availability(submission, doc.patient, "urn:uuid:1-2", APPROVED, StatusChange.ARCHIVE))
    entry = etree.fromstring(
        b'<rim:ExtrinsicObject xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" id="urn:uuid:9" lid="urn:uuid:9" '
        b'status="urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"><rim:VersionInfo versionName="1"/>'
        b'<rim:Classification classificationScheme="urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f" classifiedObject="urn:uuid:9" '
        b'id="urn:uuid:c1" nodeRepresentation="N"/></rim:ExtrinsicObject>'
    )
    masked = (Code(code="N", system="2.16.840.1.113883.5.25"), Code(code="MASQUE_PS", system="1.2.250.1.213.1.1.4.13"))
    bodies.append(queries.update_confidentiality(submission, doc.patient, entry, masked))
    for body in bodies:
        assert validator.validate(body), validator.error_log.last_error
    with pytest.raises(ValueError, match="cannot delete"):
        queries.update_availability(
            submission, doc.patient, "urn:uuid:1-2", "urn:asip:ci-sis:2010:StatusType:Deleted", StatusChange.DELETE
        )
