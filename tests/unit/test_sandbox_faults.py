"""Fault injection in process: decisions, determinism, the FHIR-only scope, and the admin switch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig, create_app
from passerelle.sandbox.faults import FaultInjector, FaultSettings
from passerelle.sandbox.testing import SampleDocument, iti65_bundle

INS = with_key("2800175123456")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SandboxConfig(data_dir=tmp_path)), raise_server_exceptions=True) as c:
        yield c


def statuses(client: TestClient, n: int) -> list[int]:
    return [
        client.get(
            "/fhir/Patient/$dmp-status", params={"identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}"}
        ).status_code
        for _ in range(n)
    ]


def test_same_seed_same_faults(client: TestClient) -> None:
    settings = {"error_rate": 0.3, "rate_429": 0.2, "seed": 7}
    client.put("/admin/faults", json=settings)
    first = statuses(client, 40)
    client.put("/admin/faults", json=settings)
    assert statuses(client, 40) == first
    assert set(first) == {200, 429, 503}


def test_injector_draws_are_deterministic() -> None:
    one, two = FaultInjector(), FaultInjector()
    for injector in (one, two):
        injector.configure(FaultSettings(reset_rate=0.2, timeout_rate=0.2, error_rate=0.2, ambiguous_rate=0.2, seed=3))
    decisions = [one.decide() for _ in range(80)]
    assert decisions == [two.decide() for _ in range(80)]
    assert {d.action for d in decisions if d} == {"reset", "timeout", "error", "ambiguous", None}


def test_429_carries_retry_after(client: TestClient) -> None:
    client.put("/admin/faults", json={"rate_429": 1.0, "retry_after_s": 2.5})
    r = client.post("/fhir", json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.50.1")))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json()["resourceType"] == "OperationOutcome"


def test_error_status_is_configurable_and_nothing_is_stored(client: TestClient) -> None:
    client.put("/admin/faults", json={"error_rate": 1.0, "error_status": 502})
    assert client.post("/fhir", json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.51.1"))).status_code == 502
    client.delete("/admin/faults")
    r = client.get("/fhir/DocumentReference", params={"patient.identifier": INS})
    assert (r.status_code, r.json()["total"]) == (200, 0)


def test_faults_apply_to_fhir_only(client: TestClient) -> None:
    client.put("/admin/faults", json={"error_rate": 1.0})
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/stats").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/fhir/DocumentReference", params={"patient.identifier": INS}).status_code == 503


def test_reset_without_a_socket_raises_in_process(client: TestClient) -> None:
    client.put("/admin/faults", json={"reset_rate": 1.0})
    with pytest.raises(ConnectionResetError):
        client.get("/fhir/DocumentReference", params={"patient.identifier": INS})


def test_faults_off_and_stats(client: TestClient) -> None:
    client.put("/admin/faults", json={"error_rate": 1.0, "latency_ms": 1, "seed": 1})
    assert client.get("/admin/faults").json()["faults"]["error_rate"] == 1.0
    statuses(client, 3)
    assert client.delete("/admin/faults").json() == {"faults": None}
    assert statuses(client, 2) == [200, 200]
    injected = client.get("/admin/stats").json()["faults_injected"]
    assert (injected["error"], injected["latency"]) == (3, 3)


@pytest.mark.parametrize(
    "body", [{"error_rate": 1.5}, {"error_status": 404}, {"latency_ms": -1}, {"unknown": 1}, {"reset_rate": "x"}]
)
def test_bad_fault_settings_are_rejected(client: TestClient, body: dict[str, object]) -> None:
    assert client.put("/admin/faults", json=body).status_code == 422
    assert client.get("/admin/faults").json() == {"faults": None}


def test_ambiguous_answer_is_a_2xx_that_is_not_fhir(client: TestClient) -> None:
    client.put("/admin/faults", json={"ambiguous_rate": 1.0})
    r = client.post("/fhir", json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.52.1")))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    client.delete("/admin/faults")
    # nothing was processed
    found = client.get("/fhir/DocumentReference", params={"patient.identifier": INS})
    assert found.json()["total"] == 0
