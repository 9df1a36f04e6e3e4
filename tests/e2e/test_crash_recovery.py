"""The gateway is SIGKILLed after acknowledging messages and before delivering them (and again with
pushes in flight); after a restart every acknowledged message is in the sandbox exactly once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import generate_samples
from tests.e2e.conftest import documents_for, wait_all_delivered

FAST_RETRIES = {
    "PASSERELLE__WORKER__RETRY__INITIAL_DELAY_S": "0.2",
    "PASSERELLE__WORKER__RETRY__MAX_DELAY_S": "1.0",
    "PASSERELLE__WORKER__LEASE_S": "3",
}


def send(port: int, samples) -> list[str]:
    results = asyncio.run(send_files("127.0.0.1", port, [(s.name, s.raw) for s in samples]))
    assert [r.control_id for r in results] == [s.control_id for s in samples]
    return [r.code for r in results]


def test_sigkill_after_ack_loses_nothing_and_duplicates_nothing(sandbox, gateway_factory) -> None:
    samples = generate_samples(24, seed=4242, now=datetime.now(UTC).replace(microsecond=0))
    first, second = samples[:12], samples[12:]
    admin = httpx.Client(base_url=sandbox.admin, timeout=10)

    # Phase A: the space answers 503 to everything; the gateway acknowledges (stored) but cannot deliver.
    admin.put("/faults", json={"error_rate": 1.0, "error_status": 503, "seed": 1}).raise_for_status()
    gw = gateway_factory(sandbox.fhir, FAST_RETRIES)
    assert send(gw.mllp_port, first) == ["AA"] * len(first)
    time.sleep(1.0)  # some failing attempts happen
    stats = admin.get("/stats").json()
    assert stats["stored"] == 0 and stats["faults_injected"]  # attempts were made, none succeeded
    gw.kill()

    # Phase B: the space is slow; the restarted gateway is killed while pushes are in flight.
    admin.put("/faults", json={"latency_ms": 1500, "seed": 2}).raise_for_status()
    gw = gateway_factory(sandbox.fhir, FAST_RETRIES)
    assert send(gw.mllp_port, second) == ["AA"] * len(second)
    time.sleep(2.0)
    gw.kill()

    # Phase C: the space is healthy; a restart delivers everything, each document exactly once.
    admin.delete("/faults").raise_for_status()
    gw = gateway_factory(sandbox.fhir, FAST_RETRIES)
    wait_all_delivered(sandbox, samples, timeout=120)  # generous: CI machines may be busy
    for s in samples:
        docs = documents_for(sandbox, s.patient.ins)
        assert len(docs) == 1, f"{s.control_id}: {len(docs)} documents in the space"
        assert docs[0]["masterIdentifier"]["value"] == f"urn:oid:{s.document_id}"
    stats = admin.get("/stats").json()
    assert stats["stored"] == len(samples)  # re-deliveries after the kills were recognised, not stored again
