"""1,000 documents for 50 patients while the space misbehaves (30 % 5xx, some 429 with Retry-After,
some connection resets): every document is delivered exactly once, each patient's documents arrive in
the order they were received, and retries back off instead of looping."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from datetime import UTC, datetime

import httpx

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import build_oru, root_only_oid, synthetic_patient
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, wait_settled

PATIENTS = 50
DOCUMENTS = 1000
INITIAL_DELAY = 0.05


async def test_thousand_documents_through_a_faulty_space(tmp_path) -> None:
    rng = random.Random(2026)
    now = datetime.now(UTC).replace(microsecond=0)
    patients = [synthetic_patient(rng, i) for i in range(PATIENTS)]
    messages: list[tuple[str, bytes, str, str]] = []  # (control id, raw, patient INS, document id)
    for n in range(DOCUMENTS):
        patient = patients[n % PATIENTS]
        doc_id = root_only_oid(rng)
        raw, _ = build_oru(now=now, control_id=f"F{n:05d}", patient=patient, document_id=doc_id, set_id=doc_id)
        messages.append((f"F{n:05d}", raw, patient.ins, doc_id))

    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.admin, timeout=30) as admin:
            faults = {"error_rate": 0.3, "rate_429": 0.05, "retry_after_s": 0.5, "reset_rate": 0.05, "seed": 7}
            (await admin.put("/faults", json=faults)).raise_for_status()
            overrides = {
                "worker.concurrency": 16,
                "worker.retry.initial_delay_s": INITIAL_DELAY,
                "worker.retry.multiplier": 2.0,
                "worker.retry.max_delay_s": 1.0,
                "worker.retry.jitter": 0.2,
                "consent.status_ttl_s": 600,
            }
            async with running_gateway(tmp_path / "gw", sandbox.fhir, **overrides) as (gw, _):
                # 8 connections, each sending its share in order (a patient's messages share a connection
                # so the order they are received in is the order they were produced).
                groups: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
                for control_id, raw, ins, _doc in messages:
                    groups[patients.index(next(p for p in patients if p.ins == ins)) % 8].append((control_id, raw))
                results = await asyncio.gather(
                    *(send_files("127.0.0.1", gw.mllp.port, items) for items in groups.values())
                )
                assert sum(1 for batch in results for r in batch if r.code == "AA") == DOCUMENTS
                rows = await wait_settled(gw, DOCUMENTS, timeout=240)
                states = defaultdict(int)
                for row in rows:
                    states[row.state] += 1
                assert states[State.DELIVERED] == DOCUMENTS, dict(states)

                # No busy loop: attempts are bounded and every retry waited at least its backoff.
                retried = 0
                for row in rows:
                    assert row.attempts <= 12, f"row {row.id}: {row.attempts} attempts"
                    events = await gw.journal.events(row.id)
                    attempts = [e.at for e in events if e.kind in ("attempt", "delivered")]
                    for earlier, later in itertools.pairwise(attempts):
                        retried += 1
                        assert (later - earlier).total_seconds() >= INITIAL_DELAY * 0.8 - 0.005
                assert retried > 100  # the faults really happened

            injected = (await admin.get("/stats")).json()
            assert injected["stored"] == DOCUMENTS
            assert sum(injected["faults_injected"].values()) > 200
            pushes = (await admin.get("/pushes")).json()

    # Exactly once and in order: per patient, the first time each document was stored follows send order.
    stored_order: dict[str, list[str]] = defaultdict(list)
    for push in pushes:
        if push["http_status"] == 200:
            for uid in push["unique_ids"]:
                if uid not in stored_order[push["patient_ins"]]:
                    stored_order[push["patient_ins"]].append(uid)
    for patient in patients:
        expected = [f"urn:oid:{doc}" for _c, _r, ins, doc in messages if ins == patient.ins]
        assert stored_order[patient.ins] == expected
