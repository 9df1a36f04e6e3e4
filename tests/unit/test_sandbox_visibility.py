"""Who sees which document: DMP visibility codes applied to searches, reads and the HTML page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig, create_app
from passerelle.sandbox.testing import SampleDocument, iti65_bundle

INS = with_key("2800175123456")
AUTHOR = "801234567890"
OTHER_PS = "801111111111"

DOCS = {
    "plain": SampleDocument("1.2.250.1.999.40.1"),
    "masked": SampleDocument("1.2.250.1.999.40.2", visibility=("MASQUE_PS",)),
    "not-patient": SampleDocument("1.2.250.1.999.40.3", visibility=("INVISIBLE_PATIENT",)),
    "not-rep": SampleDocument("1.2.250.1.999.40.4", visibility=("INVISIBLE_REPRESENTANTS_LEGAUX",)),
}
NAME_OF = {f"urn:oid:{d.unique_id}": name for name, d in DOCS.items()}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path))) as c:
        assert c.post("/fhir", json=iti65_bundle(INS, *DOCS.values())).status_code == 200
        yield c


def seen_by(client: TestClient, actor: str) -> set[str]:
    r = client.get("/fhir/DocumentReference", params={"patient.identifier": INS}, headers={"X-Actor": actor})
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    assert body["total"] == len(body["entry"])
    return {NAME_OF[e["resource"]["masterIdentifier"]["value"]] for e in body["entry"]}


@pytest.mark.parametrize(
    ("actor", "minor", "expected"),
    [
        ("patient", False, {"plain", "masked", "not-rep"}),
        (f"professional:{OTHER_PS}", False, {"plain", "not-patient", "not-rep"}),
        ("professional", False, {"plain", "not-patient", "not-rep"}),
        (f"professional:{AUTHOR}", False, {"plain", "masked", "not-patient", "not-rep"}),
        ("representative", False, set()),
        ("representative", True, {"plain", "masked", "not-patient"}),
        ("representative:Parent-1", True, {"plain", "masked", "not-patient"}),
    ],
)
def test_search_applies_the_actors_visibility(client: TestClient, actor: str, minor: bool, expected: set[str]) -> None:
    client.put(f"/admin/patients/{INS}", json={"minor": minor, "legal_representatives": ["Parent Synthétique"]})
    assert seen_by(client, actor) == expected


def test_no_actor_header_means_an_anonymous_professional(client: TestClient) -> None:
    r = client.get("/fhir/DocumentReference", params={"patient.identifier": INS})
    assert {NAME_OF[e["resource"]["masterIdentifier"]["value"]] for e in r.json()["entry"]} == {
        "plain",
        "not-patient",
        "not-rep",
    }


def test_unknown_actor_kind_is_a_bad_request(client: TestClient) -> None:
    r = client.get("/fhir/DocumentReference", params={"patient.identifier": INS}, headers={"X-Actor": "robot"})
    assert r.status_code == 400


def test_count_only_counts_visible_documents(client: TestClient) -> None:
    r = client.get(
        "/fhir/DocumentReference",
        params={"patient.identifier": INS, "_summary": "count"},
        headers={"X-Actor": "patient"},
    )
    assert r.json()["total"] == 3


def test_reads_apply_visibility(client: TestClient) -> None:
    r = client.get(
        "/fhir/DocumentReference", params={"patient.identifier": INS}, headers={"X-Actor": f"professional:{AUTHOR}"}
    )
    by_name = {NAME_OF[e["resource"]["masterIdentifier"]["value"]]: e["resource"] for e in r.json()["entry"]}
    hidden = by_name["not-patient"]
    assert client.get(f"/fhir/DocumentReference/{hidden['id']}", headers={"X-Actor": "patient"}).status_code == 404
    binary_url = hidden["content"][0]["attachment"]["url"]
    assert client.get(f"/fhir/{binary_url}", headers={"X-Actor": "patient"}).status_code == 404
    assert client.get(f"/fhir/{binary_url}", headers={"X-Actor": "professional"}).status_code == 200
    masked = by_name["masked"]["id"]
    assert (
        client.get(f"/fhir/DocumentReference/{masked}", headers={"X-Actor": f"professional:{OTHER_PS}"}).status_code
        == 404
    )
    assert (
        client.get(f"/fhir/DocumentReference/{masked}", headers={"X-Actor": f"professional:{AUTHOR}"}).status_code
        == 200
    )


def test_blocked_professional_cannot_search_or_read(client: TestClient) -> None:
    r = client.get("/fhir/DocumentReference", params={"patient.identifier": INS})
    plain = next(
        e["resource"] for e in r.json()["entry"] if NAME_OF[e["resource"]["masterIdentifier"]["value"]] == "plain"
    )
    client.put(f"/admin/patients/{INS}", json={"blocked_authors": [OTHER_PS]})
    blocked = {"X-Actor": f"professional:{OTHER_PS}"}
    assert client.get(f"/fhir/DocumentReference/{plain['id']}", headers=blocked).status_code == 403
    assert client.get(f"/fhir/{plain['content'][0]['attachment']['url']}", headers=blocked).status_code == 403
    assert client.get(f"/fhir/DocumentReference/{plain['id']}", headers={"X-Actor": "professional"}).status_code == 200
    r = client.get(
        "/fhir/DocumentReference", params={"patient.identifier": INS}, headers={"X-Actor": f"professional:{OTHER_PS}"}
    )
    assert r.status_code == 403
    assert r.json()["issue"][0]["details"]["coding"][0]["code"] == "AuthorBlocked"


def test_page_shows_each_view(client: TestClient) -> None:
    client.put(f"/admin/patients/{INS}", json={"minor": True, "legal_representatives": ["Parent <b>Synthétique</b>"]})
    html = client.get(f"/patients/{INS}").text
    sections = {
        name: html.split(f'id="view-{name}"')[1].split("</section>")[0]
        for name in ("patient", "professional", "representative")
    }
    shown = {
        name: {NAME_OF[f"urn:oid:{d.unique_id}"] for d in DOCS.values() if d.unique_id in text}
        for name, text in sections.items()
    }
    assert shown == {
        "patient": {"plain", "masked", "not-rep"},
        "professional": {"plain", "not-patient", "not-rep"},
        "representative": {"plain", "masked", "not-patient"},
    }
    # autoescape: a name typed into the admin API is text, not markup
    assert "Parent &lt;b&gt;Synthétique&lt;/b&gt;" in html
    assert "<b>Synthétique</b>" not in html


def test_page_view_is_traced_and_lists_traces(client: TestClient) -> None:
    client.get("/fhir/DocumentReference", params={"patient.identifier": INS}, headers={"X-Actor": "patient"})
    client.get(f"/patients/{INS}")
    html = client.get(f"/patients/{INS}").text
    traces = client.get(f"/admin/patients/{INS}/traces").json()
    assert [t["action"] for t in traces].count("page view") == 2
    assert 'id="trace-table"' in html
    assert "search" in html.split('id="trace-table"')[1]


def test_patient_list_page(client: TestClient) -> None:
    html = client.get("/").text
    assert f'href="/patients/{INS}"' in html
    assert client.get(f"/patients/{with_key('1790275123457')}").status_code == 404
