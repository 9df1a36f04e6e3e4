"""Injected faults as a real client sees them: TCP reset, timeout, 429 and 5xx over a socket."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from passerelle.mappings.identity.ins import with_key
from passerelle.sandbox import SandboxConfig
from passerelle.sandbox.testing import SampleDocument, SandboxURL, iti65_bundle

INS = with_key("2800175123456")
PATIENT = {"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}"}


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


async def test_connection_reset_is_a_tcp_reset(sandbox: SandboxURL) -> None:
    async with httpx.AsyncClient() as client:
        await client.put(f"{sandbox.admin}/faults", json={"reset_rate": 1.0})
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
            await client.post(sandbox.fhir, json=iti65_bundle(INS, SampleDocument("1.2.250.1.999.60.1")))
        # an RST (SO_LINGER 0), not an orderly close
        assert any(isinstance(e, ConnectionResetError) for e in _chain(caught.value)), _chain(caught.value)
        # admin still answers on a new connection, the space stored nothing, then works again
        await client.delete(f"{sandbox.admin}/faults")
        found = await client.get(f"{sandbox.fhir}/DocumentReference", params=PATIENT)
        assert found.json()["total"] == 0
        stats = (await client.get(f"{sandbox.admin}/stats")).json()
        assert stats["faults_injected"]["reset"] == 1


def test_connection_reset_seen_by_a_sync_client(tmp_path: Path) -> None:
    from passerelle.sandbox.testing import running_sandbox_sync

    with running_sandbox_sync(SandboxConfig(data_dir=tmp_path)) as url, httpx.Client() as client:
        client.put(f"{url.admin}/faults", json={"reset_rate": 1.0})
        with pytest.raises(httpx.TransportError):
            client.get(f"{url.fhir}/DocumentReference", params=PATIENT)


async def test_timeout_then_the_request_is_processed_anyway(sandbox: SandboxURL) -> None:
    bundle = iti65_bundle(INS, SampleDocument("1.2.250.1.999.61.1"))
    async with httpx.AsyncClient() as client:
        await client.put(f"{sandbox.admin}/faults", json={"timeout_rate": 1.0, "timeout_s": 0.6})
        with pytest.raises(httpx.ReadTimeout):
            await client.post(sandbox.fhir, json=bundle, timeout=0.2)
        await client.delete(f"{sandbox.admin}/faults")
        # the retry meets the same document: stored once, whichever request got there first
        retry = await client.post(sandbox.fhir, json=bundle, timeout=5)
        assert retry.status_code == 200
        assert retry.json()["entry"][1]["response"]["status"] in ("200 OK", "201 Created")


async def test_429_and_5xx_over_http(sandbox: SandboxURL) -> None:
    async with httpx.AsyncClient() as client:
        await client.put(f"{sandbox.admin}/faults", json={"rate_429": 1.0, "retry_after_s": 1})
        r = await client.get(f"{sandbox.fhir}/DocumentReference", params=PATIENT)
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
        await client.put(f"{sandbox.admin}/faults", json={"error_rate": 1.0, "error_status": 500, "latency_ms": 20})
        r = await client.get(f"{sandbox.fhir}/DocumentReference", params=PATIENT)
        assert r.status_code == 500
        assert (await client.get(f"{sandbox}/healthz")).status_code == 200
