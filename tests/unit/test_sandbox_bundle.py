"""What the sandbox accepts as an ITI-65 bundle: FHIR R4B validation plus the MHD rules it checks."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig, create_app
from passerelle.sandbox.bundle import read_submission
from passerelle.sandbox.outcome import SpaceRefusal
from passerelle.sandbox.testing import SampleDocument, iti65_bundle

INS = with_key("2800175123456")
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path))) as c:
        yield c


def doc_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return dict(bundle["entry"][1]["resource"])


def attachment(bundle: dict[str, Any]) -> dict[str, Any]:
    return dict(doc_of(bundle)["content"][0]["attachment"])


def _set_attachment(name: str, value: Any) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        b["entry"][1]["resource"]["content"][0]["attachment"][name] = value

    return mutate


def _drop_attachment(name: str) -> Mutation:
    def mutate(b: dict[str, Any]) -> None:
        del b["entry"][1]["resource"]["content"][0]["attachment"][name]

    return mutate


def _add_second_submission_set(b: dict[str, Any]) -> None:
    b["entry"].append(copy.deepcopy(b["entry"][0]) | {"fullUrl": "urn:uuid:0b9d3f1e-0000-4000-8000-000000000001"})


INVALID: list[tuple[str, Mutation, str]] = [
    ("not a transaction", lambda b: b.update(type="batch"), "transaction"),
    ("unknown FHIR element", lambda b: b["entry"][1]["resource"].update(bogus=1), "bogus"),
    ("wrong FHIR type", lambda b: b["entry"][1]["resource"].update(date="yesterday"), "date"),
    ("no masterIdentifier", lambda b: b["entry"][1]["resource"].pop("masterIdentifier"), "masterIdentifier"),
    ("no hash", _drop_attachment("hash"), "hash"),
    ("no size", _drop_attachment("size"), "size"),
    ("no title", _drop_attachment("title"), "title"),
    ("wrong size", _set_attachment("size", 3), "size"),
    ("wrong hash", _set_attachment("hash", base64.b64encode(hashlib.sha1(b"x").digest()).decode()), "SHA-1"),
    ("hex hash", _set_attachment("hash", base64.b64encode(b"0" * 20).decode()), "SHA-1"),
    ("url to nothing", _set_attachment("url", "urn:uuid:5d1c0f43-0000-4000-8000-00000000dead"), "Binary"),
    ("no submission set", lambda b: b["entry"].pop(0), "SubmissionSet"),
    ("two submission sets", _add_second_submission_set, "SubmissionSet"),
    ("period without start", lambda b: b["entry"][1]["resource"]["context"]["period"].pop("start"), "period.start"),
    ("no subject", lambda b: b["entry"][1]["resource"].pop("subject"), "subject"),
    (
        "subject not an INS",
        lambda b: b["entry"][1]["resource"].update(subject={"identifier": {"system": "urn:oid:1.2.3", "value": "1"}}),
        "INS",
    ),
    ("document not in the submission set", lambda b: b["entry"][0]["resource"].pop("entry"), "SubmissionSet"),
    ("orphan binary", lambda b: b["entry"].append(copy.deepcopy(b["entry"][2]) | {"fullUrl": "urn:uuid:x"}), "Binary"),
    (
        "visibility code under the wrong system",
        lambda b: b["entry"][1]["resource"].update(
            securityLabel=[{"coding": [{"system": "http://example.org", "code": "MASQUE_PS"}]}]
        ),
        "1.2.250.1.213.1.1.4.13",
    ),
    ("binary not base64", lambda b: b["entry"][2]["resource"].update(data="***"), "base64"),
]


@pytest.mark.parametrize(("mutate", "needle"), [pytest.param(m, n, id=i) for i, m, n in INVALID])
def test_invalid_bundles_are_refused(client: TestClient, mutate: Mutation, needle: str) -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.30.1"))
    mutate(bundle)
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400, r.text
    issue = r.json()["issue"][0]
    assert issue["details"]["coding"][0] == {"system": "urn:passerelle:dmp-error-code", "code": "InvalidBundle"}
    assert needle in issue["diagnostics"]
    search = client.get("/fhir/DocumentReference", params={"patient.identifier": INS})
    assert search.json()["total"] == 0


def test_non_json_body(client: TestClient) -> None:
    r = client.post("/fhir", content=b"<Bundle/>", headers={"Content-Type": "application/fhir+xml"})
    assert r.status_code == 400
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "InvalidBundle"


def test_diagnostics_never_echo_bundle_values(client: TestClient) -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.31.1", title="Secret Title"))
    bundle["entry"][1]["resource"]["description"] = {"nested": "Jeanne Synthétique"}
    text = client.post("/fhir", json=bundle).text
    assert "Jeanne" not in text
    assert INS not in text


def test_two_documents_for_two_patients_are_refused() -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.32.1"), SampleDocument("1.2.250.1.999.32.2"))
    other = with_key("1790275123457")
    bundle["entry"][3]["resource"]["subject"] = {
        "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": other}
    }
    with pytest.raises(SpaceRefusal, match="one patient"):
        read_submission(bundle)


def test_subject_as_a_patient_entry_of_the_bundle() -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.33.1"))
    patient_url = "urn:uuid:3c8f6a2e-0000-4000-8000-000000000033"
    bundle["entry"].append(
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    )
    for index in (0, 1):
        bundle["entry"][index]["resource"]["subject"] = {"reference": patient_url}
    submission = read_submission(bundle)
    assert (submission.patient.system, submission.patient.value) == ("urn:oid:1.2.250.1.213.1.4.8", INS)
    assert submission.roles == ["submissionset", "document", "binary", "patient"]


def test_author_and_organisation_are_read_from_contained_resources() -> None:
    submission = read_submission(iti65_bundle(INS, SampleDocument("1.2.250.1.999.34.1", author="801112223334")))
    assert (submission.documents[0].author_idnat, submission.documents[0].author_org) == ("801112223334", "1750000017")
    alone = read_submission(iti65_bundle(INS, SampleDocument("1.2.250.1.999.34.2", organisation=None)))
    assert alone.documents[0].author_idnat == "801234567890"
    org_only = read_submission(iti65_bundle(INS, SampleDocument("1.2.250.1.999.34.3", author=None), source=None))
    assert (org_only.documents[0].author_idnat, org_only.documents[0].author_org) == (None, "1750000017")
    assert org_only.authors == set()


# --- the ANS PDSm examples of the public corpus ----------------------------------------------------------

ANS = "fhir-mhd/fr-ans-pdsm"


def load(corpus_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((corpus_dir / ANS / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.corpus
def test_ans_crbio_example_is_valid_fhir_but_lacks_mhd_metadata(corpus_dir: Path, client: TestClient) -> None:
    # the published CR-BIO replacement bundle has no masterIdentifier, size, hash or title: a real
    # space would refuse it, and the gateway must never send one like it
    r = client.post("/fhir", json=load(corpus_dir, "Bundle-Bundle-CRBio-Replace-ANS.json"))
    assert r.status_code == 400
    assert "masterIdentifier" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.corpus
def test_ans_comprehensive_replace_example_hash_mismatch_is_detected(corpus_dir: Path, client: TestClient) -> None:
    # its 5-byte Binary ("Hello") does not have the declared SHA-1
    bundle = load(corpus_dir, "Bundle-bundle-exemple-comprehensiveprovidedocument-replace.json")
    bundle["entry"][1]["resource"]["subject"] = {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}}
    bundle["entry"][0]["resource"]["subject"] = bundle["entry"][1]["resource"]["subject"]
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 400
    assert "SHA-1" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.corpus
def test_ans_comprehensive_replace_example_is_accepted_once_completed(corpus_dir: Path, client: TestClient) -> None:
    """The ANS example, with the two gaps filled (a resolvable INS subject, the right SHA-1), replaces
    a document pushed before: PractitionerRole author, PATCH entry and Binary after the reference."""
    original = iti65_bundle(INS, SampleDocument("1.2.250.1.999.35.1"), ins_system="urn:oid:1.2.250.1.213.1.4.8")
    first = client.post("/fhir", json=original)
    old_location = first.json()["entry"][1]["response"]["location"]

    text = (corpus_dir / ANS / "Bundle-bundle-exemple-comprehensiveprovidedocument-replace.json").read_text()
    bundle = json.loads(text.replace("DocumentReference/doc-old", old_location))
    subject = {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}}
    bundle["entry"][0]["resource"]["subject"] = subject
    bundle["entry"][1]["resource"]["subject"] = subject
    data = base64.b64decode(bundle["entry"][3]["resource"]["data"])
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["hash"] = base64.b64encode(
        hashlib.sha1(data).digest()
    ).decode()

    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert [e["response"]["location"].split("/")[0] for e in entries] == [
        "List",
        "DocumentReference",
        "DocumentReference",
        "Binary",
    ]
    assert entries[2]["response"]["location"] == old_location
    old = client.get(f"/fhir/{old_location}").json()
    assert old["status"] == "superseded"
    new = client.get(f"/fhir/{entries[1]['response']['location']}").json()
    assert new["status"] == "current"
    assert new["relatesTo"][0]["target"]["reference"] == old_location
    pushes = client.get("/admin/pushes", params={"ins": INS}).json()
    # the contained PractitionerRole carries an RPPS number: IdNat_PS = "8" + RPPS
    assert pushes[-1]["actor"] == "professional:81011848351"


def test_author_split_into_practitioner_and_organisation_references() -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.36.1"))
    reference = bundle["entry"][1]["resource"]
    reference["author"] = [{"reference": "#author"}, {"reference": "#org"}]
    submission = read_submission(bundle)
    assert (submission.documents[0].author_idnat, submission.documents[0].author_org) == ("801234567890", "1750000017")


def test_elements_validated_once_give_the_same_refusals() -> None:
    """The sandbox validates each distinct FHIR element once (sandbox/fhir_models.py): once it has seen
    valid bundles, every refusal of the list above is still the same refusal, word for word."""
    from passerelle.sandbox.fhir_models import FhirValidator

    warm = FhirValidator()
    for n in range(5):
        read_submission(iti65_bundle(INS, SampleDocument(f"1.2.250.1.999.36.{n}")), warm)
    read_submission(iti65_bundle(INS, SampleDocument("1.2.250.1.999.30.1")), warm)
    for _, mutate, _ in INVALID:
        answers = []
        for validator in (None, warm):
            bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.30.1"))
            mutate(bundle)
            with pytest.raises(SpaceRefusal) as refused:
                read_submission(bundle, validator)
            answers.append((refused.value.code, refused.value.diagnostics))
        assert answers[0] == answers[1]
