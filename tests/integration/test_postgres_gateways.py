"""Two gateway instances share one PostgreSQL journal: messages received by either listener are each
delivered exactly once, in order per patient, whichever instance's worker picks them up."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime

import httpx

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import build_oru, root_only_oid, synthetic_patient
from passerelle.queue.model import Query, State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway
from tests.support.pg import pg_schema


async def test_two_instances_on_one_postgres_journal(tmp_path, monkeypatch) -> None:
    rng = random.Random(99)
    now = datetime.now(UTC).replace(microsecond=0)
    patients = [synthetic_patient(rng, i) for i in range(6)]
    messages = []
    for n in range(36):
        patient = patients[n % len(patients)]
        doc_id = root_only_oid(rng)
        raw, _ = build_oru(now=now, control_id=f"PG{n:04d}", patient=patient, document_id=doc_id, set_id=doc_id)
        messages.append((f"PG{n:04d}", raw, patient.ins, doc_id))

    async with pg_schema() as (dsn, schema):
        monkeypatch.setenv("PASSERELLE_PG_DSN", dsn)
        pg = {"journal.backend": "postgres", "journal.dsn_env": "PASSERELLE_PG_DSN", "journal.schema": schema}
        async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
            async with (
                running_gateway(tmp_path / "a", sandbox.fhir, **pg) as (gw_a, _),
                running_gateway(tmp_path / "b", sandbox.fhir, **pg) as (gw_b, _),
            ):
                # Each patient's messages go to one instance, alternating patients between instances.
                by_gateway: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
                for control_id, raw, ins, _doc in messages:
                    by_gateway[[p.ins for p in patients].index(ins) % 2].append((control_id, raw))
                results = await asyncio.gather(
                    send_files("127.0.0.1", gw_a.mllp.port, by_gateway[0]),
                    send_files("127.0.0.1", gw_b.mllp.port, by_gateway[1]),
                )
                assert [r.code for batch in results for r in batch] == ["AA"] * len(messages)
                for _ in range(300):
                    rows = await gw_a.journal.find(Query(limit=1000))
                    if len(rows) == len(messages) and all(r.state is State.DELIVERED for r in rows):
                        break
                    await asyncio.sleep(0.1)
                assert sorted(r.state.value for r in rows) == ["delivered"] * len(messages)
                assert gw_a.worker.stats.processed + gw_b.worker.stats.processed >= len(messages)
            async with httpx.AsyncClient(base_url=sandbox.admin, timeout=10) as admin:
                stats = (await admin.get("/stats")).json()
                pushes = (await admin.get("/pushes")).json()
    assert stats["stored"] == len(messages)
    order: dict[str, list[str]] = defaultdict(list)
    for push in pushes:
        if push["http_status"] == 200:
            for uid in push["unique_ids"]:
                if uid not in order[push["patient_ins"]]:
                    order[push["patient_ins"]].append(uid)
    for patient in patients:
        assert order[patient.ins] == [f"urn:oid:{d}" for _c, _r, ins, d in messages if ins == patient.ins]
