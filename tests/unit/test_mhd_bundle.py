"""ITI-65 bundle builder (mappings/mhd.py): FHIR R4 validity, PDSm shape, determinism."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from passerelle.mappings.document import Action, Author, Code, Document, ReferenceId, confidentiality_code
from passerelle.mappings.mhd.bundle import (
    RFC3986,
    SubmissionInfo,
    build_provide_bundle,
    deletion_identifier,
    fhir_system,
)
from tests.support.space_docs import AUTHOR_ID, INS, ORG_ID, deletion, document, replacement

SUBMISSION = SubmissionInfo(
    source_id="1.2.250.1.999.9",
    submission_time=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
    content_type=Code(code="04", system="1.2.250.1.213.2.2"),
)


def _resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_validates_as_fhir_r4_transaction() -> None:
    bundle = build_provide_bundle([document()], SUBMISSION)
    parsed = Bundle.model_validate(bundle)
    assert parsed.type == "transaction"
    assert [e["request"]["url"] for e in bundle["entry"]] == ["List", "DocumentReference", "Binary"]
    assert all(e["request"]["method"] == "POST" for e in bundle["entry"])
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])


def test_document_reference_carries_the_dmp_metadata() -> None:
    doc = document(
        confidentiality=(confidentiality_code("N"), confidentiality_code("INVISIBLE_PATIENT")),
        service_stop=datetime(2026, 11, 20, 7, 30, tzinfo=UTC),
    )
    bundle = build_provide_bundle([doc], SUBMISSION)
    ref = _resources(bundle, "DocumentReference")[0]
    assert ref["masterIdentifier"] == {"system": RFC3986, "value": f"urn:oid:{doc.unique_id}"}
    assert ref["status"] == "current"
    assert ref["type"]["coding"][0] == {
        "system": "urn:oid:2.16.840.1.113883.6.1",
        "code": "11502-2",
        "display": "CR d'examens biologiques",
    }
    assert ref["category"][0]["coding"][0]["system"] == "urn:oid:1.2.250.1.213.1.1.4.1"
    assert ref["category"][0]["coding"][0]["code"] == "10"
    assert ref["subject"] == {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": INS}}
    labels = [(c["coding"][0]["system"], c["coding"][0]["code"]) for c in ref["securityLabel"]]
    assert labels == [
        ("urn:oid:2.16.840.1.113883.5.25", "N"),
        ("urn:oid:1.2.250.1.213.1.1.4.13", "INVISIBLE_PATIENT"),
    ]
    attachment = ref["content"][0]["attachment"]
    assert attachment["contentType"] == "text/xml"
    assert attachment["language"] == "fr-FR"
    assert attachment["size"] == len(doc.content)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(doc.content).digest()).decode()
    assert attachment["title"] == doc.title
    assert attachment["creation"] == "2026-11-20T08:30:00+00:00"
    assert ref["description"] == doc.title
    assert ref["content"][0]["format"] == {
        "system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
        "code": "urn:ihe:lab:xd-lab:2008",
    }
    ctx = ref["context"]
    assert ctx["period"] == {"start": "2026-11-20T07:00:00+00:00", "end": "2026-11-20T07:30:00+00:00"}
    assert ctx["facilityType"]["coding"][0] == {"system": "urn:oid:1.2.250.1.71.4.2.4", "code": "SA25"}
    assert ctx["practiceSetting"]["coding"][0]["system"] == "urn:oid:1.2.250.1.213.1.1.4.9"
    assert ctx["related"][0]["identifier"]["value"] == "ORD-1"
    assert ctx["related"][0]["identifier"]["type"]["coding"][0]["code"] == "urn:ihe:iti:xds:2013:order"
    assert "relatesTo" not in ref


def test_author_is_contained_practitioner_and_organisation() -> None:
    bundle = build_provide_bundle([document()], SUBMISSION)
    ref = _resources(bundle, "DocumentReference")[0]
    contained = {c["id"]: c for c in ref["contained"]}
    refs = [a["reference"] for a in ref["author"]]
    assert refs == ["#author-ps", "#author-org"]
    assert contained["author-ps"]["resourceType"] == "Practitioner"
    assert contained["author-ps"]["identifier"][0] == {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": AUTHOR_ID}
    assert contained["author-org"]["identifier"][0] == {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": ORG_ID}
    assert ref["custodian"] == {"reference": "#author-org"}
    # no demographics travel in the metadata: the contained source patient carries only the local id
    assert set(contained["source-patient"]) == {"resourceType", "id", "identifier"}


def test_empty_optional_values_are_left_out() -> None:
    doc = document(
        title="",
        language="",
        author=Author(),
        reference_ids=(ReferenceId(value="", type="urn:ihe:iti:xds:2013:order"),),
        facility_type=None,
        practice_setting=None,
        confidentiality=(),
    )
    bundle = build_provide_bundle([doc], SUBMISSION)
    Bundle.model_validate(bundle)
    ref = _resources(bundle, "DocumentReference")[0]
    assert "description" not in ref and "language" not in ref["content"][0]["attachment"]
    assert ref["content"][0]["attachment"]["size"] == len(doc.content)  # zeros and falses are kept


def test_device_author() -> None:
    doc = document(author=Author(device="AUTOMATE-1", organisation_id=ORG_ID))
    bundle = build_provide_bundle([doc], SUBMISSION)
    Bundle.model_validate(bundle)
    ref = _resources(bundle, "DocumentReference")[0]
    assert ref["author"][0] == {"reference": "#author-device"}


def test_binary_holds_the_exact_bytes_and_is_referenced_by_the_attachment() -> None:
    doc = document()
    bundle = build_provide_bundle([doc], SUBMISSION)
    ref_entry, bin_entry = bundle["entry"][1], bundle["entry"][2]
    assert ref_entry["resource"]["content"][0]["attachment"]["url"] == bin_entry["fullUrl"]
    assert base64.b64decode(bin_entry["resource"]["data"]) == doc.content
    assert bin_entry["resource"]["contentType"] == doc.mime_type


def test_submission_set() -> None:
    doc = document()
    bundle = build_provide_bundle([doc], SUBMISSION)
    ss = _resources(bundle, "List")[0]
    assert ss["code"]["coding"][0]["code"] == "submissionset"
    assert ss["mode"] == "working" and ss["status"] == "current"
    ext = {e["url"].rsplit("/", 1)[-1]: e for e in ss["extension"]}
    assert ext["ihe-designationType"]["valueCodeableConcept"]["coding"][0]["code"] == "04"
    assert ext["ihe-sourceId"]["valueIdentifier"]["value"] == "urn:oid:1.2.250.1.999.9"
    assert ss["subject"] == {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": INS}}
    assert ss["source"]["reference"] == "#ss-author-ps"
    assert ss["source"]["extension"][0]["valueReference"] == {"reference": "#ss-author-org"}
    assert ss["entry"] == [{"item": {"reference": bundle["entry"][1]["fullUrl"]}}]
    assert ss["date"] == "2026-11-21T10:00:00+00:00"
    unique = next(i for i in ss["identifier"] if i["use"] == "usual")["value"]
    assert unique.startswith("urn:oid:2.25.")


def test_submission_author_comes_from_the_sender_segment() -> None:
    sender = Author(person_id="801111111111", organisation_id="1999999999", organisation_name="PFI")
    bundle = build_provide_bundle([document(submission_author=sender)], SUBMISSION)
    ss = _resources(bundle, "List")[0]
    contained = {c["id"]: c for c in ss["contained"]}
    assert contained["ss-author-ps"]["identifier"][0]["value"] == "801111111111"
    ref = _resources(bundle, "DocumentReference")[0]
    assert {c["id"]: c for c in ref["contained"]}["author-ps"]["identifier"][0]["value"] == AUTHOR_ID


def test_replacement_relates_to_the_old_unique_id() -> None:
    old = document()
    new = replacement(old, "1.2.250.1.999.2.3.2")
    bundle = build_provide_bundle([new], SUBMISSION)
    Bundle.model_validate(bundle)
    ref = _resources(bundle, "DocumentReference")[0]
    assert ref["relatesTo"] == [
        {"code": "replaces", "target": {"identifier": {"system": RFC3986, "value": f"urn:oid:{old.unique_id}"}}}
    ]


def test_rebuild_is_byte_identical_and_urls_follow_the_unique_id() -> None:
    a = json.dumps(build_provide_bundle([document()], SUBMISSION), separators=(",", ":"))
    b = json.dumps(build_provide_bundle([document()], SUBMISSION), separators=(",", ":"))
    assert a == b
    other = build_provide_bundle([document("1.2.250.1.999.2.3.77")], SUBMISSION)
    assert other["entry"][1]["fullUrl"] not in a


def test_several_documents_one_submission() -> None:
    docs = [document("1.2.250.1.999.2.3.1"), document("1.2.250.1.999.2.3.2")]
    bundle = build_provide_bundle(docs, SUBMISSION)
    Bundle.model_validate(bundle)
    assert [e["request"]["url"] for e in bundle["entry"]] == [
        "List",
        "DocumentReference",
        "Binary",
        "DocumentReference",
        "Binary",
    ]
    assert len(_resources(bundle, "List")[0]["entry"]) == 2


@pytest.mark.parametrize(
    "docs",
    [
        [],
        [deletion(document())],
        [document(), document("1.2.250.1.999.2.3.9", patient=document().patient.model_copy(update={"ins": "x"}))],
    ],
    ids=["empty", "deletion", "two-patients"],
)
def test_refuses_what_is_not_one_patients_publication(docs: list[Document]) -> None:
    with pytest.raises(ValueError):
        build_provide_bundle(docs, SUBMISSION)


def test_fhir_system() -> None:
    assert fhir_system("1.2.3") == "urn:oid:1.2.3"
    assert fhir_system("urn:oid:1.2.3") == "urn:oid:1.2.3"
    assert fhir_system("http://loinc.org") == "http://loinc.org"


def test_deletion_identifier() -> None:
    old = document()
    assert deletion_identifier(deletion(old)) == f"{RFC3986}|urn:oid:{old.unique_id}"
    assert deletion(old).action == Action.DELETE


def test_same_shape_as_the_ans_replacement_example(corpus_dir: Path) -> None:
    """Structural comparison with the ANS PDSm example (CR-BIO replacement): same resource kinds and
    request methods for the document part, relatesTo replaces, attachment → Binary by fullUrl."""
    example = json.loads((corpus_dir / "fhir-mhd/fr-ans-pdsm/Bundle-Bundle-CRBio-Replace-ANS.json").read_text())
    Bundle.model_validate(example)
    ours = build_provide_bundle([replacement(document(), "1.2.250.1.999.2.3.2")], SUBMISSION)
    assert ours["type"] == example["type"] == "transaction"
    assert ours["meta"]["profile"] == example["meta"]["profile"]
    ex_new = [e["resource"] for e in example["entry"] if e["resource"]["resourceType"] == "DocumentReference"][-1]
    our_ref = _resources(ours, "DocumentReference")[0]
    # every top-level element of the ANS DocumentReference is present in ours (id/meta/text aside)
    missing = set(ex_new) - set(our_ref) - {"id", "text"}
    assert not missing
    assert our_ref["relatesTo"][0]["code"] == ex_new["relatesTo"][0]["code"] == "replaces"
    for bundle in (example, ours):
        urls = {e["fullUrl"]: e["resource"]["resourceType"] for e in bundle["entry"]}
        refs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
        assert all(urls[r["content"][0]["attachment"]["url"]] == "Binary" for r in refs)
        ss = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "List")
        assert ss["code"]["coding"][0]["code"] == "submissionset"
        assert all(urls[i["item"]["reference"]] == "DocumentReference" for i in ss["entry"])
