"""ITI-65 pushes into the sandbox, in process (FastAPI TestClient): acceptance, dedup, refusals."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig, create_app
from passerelle.sandbox.testing import SampleDocument, iti65_bundle

INS = with_key("2800175123456")
OTHER_INS = with_key("1790275123457")
PATIENT_ID = f"urn:oid:1.2.250.1.213.1.4.10|{INS}"
AUTHOR = "801234567890"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path / "space"))) as c:
        yield c


def push(client: TestClient, bundle: dict[str, Any], **headers: str) -> Any:
    return client.post("/fhir", json=bundle, headers=headers)


def code_of(response: Any) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["details"]["coding"][0]["code"])


def search(client: TestClient, actor: str = "professional", **params: str) -> dict[str, Any]:
    r = client.get(
        "/fhir/DocumentReference", params={"patient.identifier": PATIENT_ID, **params}, headers={"X-Actor": actor}
    )
    assert r.status_code == 200
    return dict(r.json())


def test_push_is_stored_and_answered_in_request_order(client: TestClient) -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.1.1"), SampleDocument("1.2.250.1.999.1.2"))
    r = push(client, bundle)
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "transaction-response"
    kinds = [e["response"]["location"].split("/")[0] for e in body["entry"]]
    assert kinds == [e["request"]["url"] for e in bundle["entry"]]
    assert all(e["response"]["status"] == "201 Created" for e in body["entry"])
    found = search(client)
    assert found["total"] == 2
    assert {e["resource"]["masterIdentifier"]["value"] for e in found["entry"]} == {
        "urn:oid:1.2.250.1.999.1.1",
        "urn:oid:1.2.250.1.999.1.2",
    }


def test_stored_reference_points_to_a_readable_binary(client: TestClient) -> None:
    doc = SampleDocument("1.2.250.1.999.2.1", content=b"%PDF-1.4 bytes to read back")
    r = push(client, iti65_bundle(INS, doc))
    location = r.json()["entry"][1]["response"]["location"]
    reference = client.get(f"/fhir/{location}").json()
    assert reference["status"] == "current"
    assert reference["subject"]["identifier"]["value"] == INS
    binary = client.get(f"/fhir/{reference['content'][0]['attachment']['url']}").json()
    assert base64.b64decode(binary["data"]) == doc.content


def test_same_unique_id_and_content_is_stored_once(client: TestClient) -> None:
    first = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.3.1")))
    second = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.3.1")))
    assert second.status_code == 200
    assert all(e["response"]["status"] == "200 OK" for e in second.json()["entry"])
    assert second.json()["entry"][1]["response"]["location"] == first.json()["entry"][1]["response"]["location"]
    assert search(client)["total"] == 1
    outcomes = [p["outcome"] for p in client.get("/admin/pushes", params={"ins": INS}).json()]
    assert outcomes == ["accepted", "duplicate"]


def test_mixed_new_and_known_documents(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.4.1")))
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.4.1"), SampleDocument("1.2.250.1.999.4.2")))
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["201 Created", "200 OK", "200 OK", "201 Created", "201 Created"]


def test_same_unique_id_other_content_is_a_conflict(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.5.1")))
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.5.1", content=b"other bytes")))
    assert r.status_code == 409
    assert code_of(r) == "UniqueIdConflict"
    assert search(client)["total"] == 1


def test_conflict_stores_nothing_of_the_bundle(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.6.1")))
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.6.2"), SampleDocument("1.2.250.1.999.6.1", content=b"x"))
    assert push(client, bundle).status_code == 409
    assert search(client)["total"] == 1


def test_idempotency_key_replays_the_first_response(client: TestClient) -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.7.1"))
    first = push(client, bundle, **{"Idempotency-Key": "1.2.250.1.999.7.1"})
    again = push(client, bundle, **{"Idempotency-Key": "1.2.250.1.999.7.1"})
    assert again.status_code == 200
    assert again.json() == first.json()
    outcomes = [p["outcome"] for p in client.get("/admin/pushes", params={"ins": INS}).json()]
    assert outcomes == ["accepted"]
    assert [p["outcome"] for p in client.get("/admin/pushes").json()] == ["accepted", "replayed"]


def test_idempotency_key_does_not_replay_a_refusal(client: TestClient) -> None:
    client.put(f"/admin/patients/{INS}", json={"status": "FERME"})
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.8.1"))
    assert push(client, bundle, **{"Idempotency-Key": "k8"}).status_code == 422
    client.put(f"/admin/patients/{INS}", json={"status": "ACTIF"})
    assert push(client, bundle, **{"Idempotency-Key": "k8"}).status_code == 200


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ({"status": "FERME"}, 422, "DMPClosed"),
        ({"status": "INEXISTANT"}, 422, "DMPNotFound"),
        ({"opposed": True}, 422, "PatientOpposed"),
        ({"blocked_authors": [AUTHOR]}, 403, "AuthorBlocked"),
    ],
)
def test_business_refusals(client: TestClient, state: dict[str, Any], status: int, code: str) -> None:
    assert client.put(f"/admin/patients/{INS}", json=state).status_code == 200
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.9.1")))
    assert r.status_code == status
    assert code_of(r) == code
    assert search(client)["total"] == 0
    pushes = client.get("/admin/pushes", params={"ins": INS}).json()
    assert [(p["outcome"], p["code"]) for p in pushes] == [("refused", code)]


def test_blocked_author_found_in_submission_set_source(client: TestClient) -> None:
    client.put(f"/admin/patients/{INS}", json={"blocked_authors": ["809999999999"]})
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.10.1"), source="809999999999")
    assert code_of(push(client, bundle)) == "AuthorBlocked"


def test_unknown_patient_without_auto_create_is_not_found(tmp_path: Path) -> None:
    config = SandboxConfig(data_dir=tmp_path, auto_create_patients=False)
    with TestClient(create_app(config)) as c:
        r = push(c, iti65_bundle(INS, SampleDocument("1.2.250.1.999.11.1")))
        assert (r.status_code, code_of(r)) == (422, "DMPNotFound")
        c.put(f"/admin/patients/{INS}", json={"status": "ACTIF"})
        assert push(c, iti65_bundle(INS, SampleDocument("1.2.250.1.999.11.1"))).status_code == 200


def test_replacement_supersedes_the_old_reference(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.12.1")))
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.12.2", b"v2", replaces="1.2.250.1.999.12.1")))
    assert r.status_code == 200
    by_uid = {e["resource"]["masterIdentifier"]["value"]: e["resource"] for e in search(client)["entry"]}
    assert by_uid["urn:oid:1.2.250.1.999.12.1"]["status"] == "superseded"
    assert by_uid["urn:oid:1.2.250.1.999.12.2"]["status"] == "current"
    assert search(client, status="current")["total"] == 1


def test_replacement_of_an_unknown_document_is_refused(client: TestClient) -> None:
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.13.2", replaces="1.2.250.1.999.13.1")))
    assert (r.status_code, code_of(r)) == (422, "UnknownReplacedDocument")


def test_replacement_of_another_patients_document_is_refused(client: TestClient) -> None:
    push(client, iti65_bundle(OTHER_INS, SampleDocument("1.2.250.1.999.14.1")))
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.14.2", replaces="1.2.250.1.999.14.1")))
    assert code_of(r) == "UnknownReplacedDocument"


def delete(client: TestClient, unique_id: str, author: str | None) -> Any:
    headers = {"X-Author": author} if author else {}
    return client.delete(
        "/fhir/DocumentReference", params={"identifier": f"urn:ietf:rfc:3986|urn:oid:{unique_id}"}, headers=headers
    )


def test_deletion_by_the_author_is_logical_and_idempotent(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.15.1")))
    first = delete(client, "1.2.250.1.999.15.1", AUTHOR)
    assert first.status_code == 200
    assert first.json()["issue"][0]["severity"] == "information"
    assert delete(client, "1.2.250.1.999.15.1", AUTHOR).status_code == 200
    assert search(client)["entry"][0]["resource"]["status"] == "entered-in-error"
    assert search(client, status="current")["total"] == 0


def test_deletion_by_the_authors_organisation(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.16.1", organisation="1750000017")))
    assert delete(client, "1.2.250.1.999.16.1", "1750000017").status_code == 200


@pytest.mark.parametrize(("author", "status", "code"), [("809999999999", 403, "NotAuthor"), (None, 403, "NotAuthor")])
def test_deletion_by_someone_else_is_refused(client: TestClient, author: str | None, status: int, code: str) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.17.1")))
    r = delete(client, "1.2.250.1.999.17.1", author)
    assert (r.status_code, code_of(r)) == (status, code)
    assert search(client, status="current")["total"] == 1


def test_deletion_of_an_unknown_document(client: TestClient) -> None:
    r = delete(client, "1.2.250.1.999.18.1", AUTHOR)
    assert (r.status_code, code_of(r)) == (404, "UnknownDocument")


def test_replacing_a_deleted_document_is_refused(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.19.1")))
    delete(client, "1.2.250.1.999.19.1", AUTHOR)
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.19.2", replaces="1.2.250.1.999.19.1")))
    assert code_of(r) == "UnknownReplacedDocument"


def status_of(client: TestClient, ins: str, author: str = AUTHOR) -> dict[str, Any]:
    r = client.get(
        "/fhir/Patient/$dmp-status", params={"identifier": f"urn:oid:1.2.250.1.213.1.4.10|{ins}", "author": author}
    )
    assert r.status_code == 200
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in r.json()["parameter"]}


def test_status_lookup(client: TestClient) -> None:
    assert status_of(client, INS) == {"status": "ACTIF", "opposed": False, "authorBlocked": False, "minor": False}
    client.put(
        f"/admin/patients/{INS}", json={"status": "FERME", "opposed": True, "blocked_authors": [AUTHOR], "minor": True}
    )
    assert status_of(client, INS) == {"status": "FERME", "opposed": True, "authorBlocked": True, "minor": True}
    assert status_of(client, INS, author="800000000001")["authorBlocked"] is False


def test_status_lookup_url_encoded_dollar(client: TestClient) -> None:
    r = client.get("/fhir/Patient/%24dmp-status", params={"identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}"})
    assert r.status_code == 200


def test_status_lookup_of_unknown_patient_without_auto_create(tmp_path: Path) -> None:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path, auto_create_patients=False))) as c:
        assert status_of(c, INS)["status"] == "INEXISTANT"
        assert c.get(f"/admin/patients/{INS}").status_code == 404


def test_search_count_and_summary(client: TestClient) -> None:
    docs = [SampleDocument(f"1.2.250.1.999.20.{i}") for i in range(1, 6)]
    push(client, iti65_bundle(INS, *docs))
    limited = search(client, _count="2")
    assert limited["total"] == 5
    assert len(limited["entry"]) == 2
    summary = search(client, _summary="count")
    assert summary["total"] == 5
    assert "entry" not in summary


def test_search_is_per_patient(client: TestClient) -> None:
    push(client, iti65_bundle(OTHER_INS, SampleDocument("1.2.250.1.999.21.1")))
    assert search(client)["total"] == 0


def test_search_requires_the_patient(client: TestClient) -> None:
    assert client.get("/fhir/DocumentReference").status_code == 400


def test_reads_and_searches_are_traced(client: TestClient) -> None:
    r = push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.22.1")))
    location = r.json()["entry"][1]["response"]["location"]
    search(client, actor="patient")
    client.get(f"/fhir/{location}", headers={"X-Actor": "professional:801111111111"})
    traces = client.get(f"/admin/patients/{INS}/traces").json()
    assert [(t["action"], t["actor"]) for t in traces] == [
        ("push", f"professional:{AUTHOR}"),
        ("search", "patient"),
        ("read", "professional:801111111111"),
    ]
    assert traces[2]["document_id"] == location.split("/")[1]


def test_push_trace_names_the_x_actor(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.23.1")), **{"X-Actor": "gateway-lab-1"})
    traces = client.get(f"/admin/patients/{INS}/traces").json()
    assert traces[0]["actor"] == "gateway-lab-1"


def test_read_of_unknown_ids(client: TestClient) -> None:
    assert client.get("/fhir/DocumentReference/nope").status_code == 404
    assert client.get("/fhir/Binary/nope").status_code == 404


def test_stats_count_pushes(client: TestClient) -> None:
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.24.1")))
    push(client, iti65_bundle(INS, SampleDocument("1.2.250.1.999.24.1")))
    push(client, {"resourceType": "Bundle", "type": "batch"})
    stats = client.get("/admin/stats").json()
    assert (stats["pushes"], stats["stored"], stats["refused"]) == (3, 1, 1)


def test_bearer_token_required_when_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-test-token\n")
    admin_file = tmp_path / "admin"
    admin_file.write_text("admin-test-token")
    config = SandboxConfig(data_dir=tmp_path / "d", require_token_file=token_file, admin_token_file=admin_file)
    with TestClient(create_app(config)) as c:
        bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.25.1"))
        assert push(c, bundle).status_code == 401
        assert push(c, bundle, Authorization="Bearer wrong").status_code == 401
        assert push(c, bundle, Authorization="Bearer s3cret-test-token").status_code == 200
        assert c.get("/admin/stats").status_code == 401
        assert c.get("/admin/stats", headers={"Authorization": "Bearer admin-test-token"}).status_code == 200
        assert c.get("/").status_code == 401
        assert c.get("/healthz").status_code == 200


def test_empty_token_file_fails_at_creation(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        create_app(SandboxConfig(data_dir=tmp_path, require_token_file=tmp_path / "t"))


def test_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path / "space"))) as c:
        push(c, iti65_bundle(INS, SampleDocument("1.2.250.1.999.26.1")))
    assert (tmp_path / "space" / "sandbox.sqlite3").is_file()
    # state survives a restart
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path / "space"))) as c:
        r = c.get("/fhir/DocumentReference", params={"patient.identifier": PATIENT_ID})
        assert r.json()["total"] == 1


def test_sample_bundle_hash_is_base64_sha1_of_the_content() -> None:
    doc = SampleDocument("1.2.250.1.999.27.1")
    attachment = iti65_bundle(INS, doc)["entry"][1]["resource"]["content"][0]["attachment"]
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(doc.content).digest()).decode()
    assert attachment["size"] == len(doc.content)


@pytest.mark.parametrize("identifier", [INS, f"urn:oid:1.2.3|{INS}", "urn:oid:1.2.250.1.213.1.4.10|"])
def test_status_lookup_needs_an_ins_identifier(client: TestClient, identifier: str) -> None:
    assert client.get("/fhir/Patient/$dmp-status", params={"identifier": identifier}).status_code == 400
    assert client.get("/admin/patients").json() == []
