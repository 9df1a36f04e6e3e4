"""The sandbox over real HTTP: uvicorn on 127.0.0.1 (free port) and an httpx client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SampleDocument, iti65_bundle, running_sandbox, running_sandbox_sync

INS = with_key("2800175123456")
PATIENT_ID = f"urn:oid:1.2.250.1.213.1.4.10|{INS}"


async def test_push_dedup_and_search_over_http(tmp_path: Path) -> None:
    async with running_sandbox(SandboxConfig(data_dir=tmp_path)) as url, httpx.AsyncClient() as client:
        assert url.startswith("http://127.0.0.1:")
        assert (await client.get(f"{url}/healthz")).json() == {"status": "ok"}
        bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.100.1"))
        first = await client.post(url.fhir, json=bundle, headers={"Content-Type": "application/fhir+json"})
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("application/fhir+json")
        assert first.json()["entry"][1]["response"]["status"] == "201 Created"
        second = await client.post(f"{url.fhir}/", json=bundle)
        assert second.json()["entry"][1]["response"]["status"] == "200 OK"
        found = await client.get(f"{url.fhir}/DocumentReference", params={"patient.identifier": PATIENT_ID})
        assert found.json()["total"] == 1
    assert (tmp_path / "sandbox.sqlite3").is_file()


def test_sync_helper_and_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    config = SandboxConfig(data_dir=tmp_path)
    with running_sandbox_sync(config) as url:
        r = httpx.post(url.fhir, json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.101.1")))
        assert r.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")
    with running_sandbox_sync(config) as url2:
        found = httpx.get(f"{url2.fhir}/DocumentReference", params={"patient.identifier": PATIENT_ID})
        assert found.json()["total"] == 1


async def test_two_sandboxes_side_by_side(tmp_path: Path) -> None:
    async with (
        running_sandbox(SandboxConfig(data_dir=tmp_path / "a")) as a,
        running_sandbox(SandboxConfig(data_dir=tmp_path / "b")) as b,
        httpx.AsyncClient() as client,
    ):
        assert a != b
        await client.post(a.fhir, json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.102.1")))
        params = {"patient.identifier": PATIENT_ID}
        assert (await client.get(f"{a.fhir}/DocumentReference", params=params)).json()["total"] == 1
        assert (await client.get(f"{b.fhir}/DocumentReference", params=params)).json()["total"] == 0


async def test_start_failure_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")
    with pytest.raises(RuntimeError, match="did not start"):
        async with running_sandbox(SandboxConfig(data_dir=blocker)):
            pass
