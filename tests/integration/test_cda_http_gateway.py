"""CDA over HTTP through the whole gateway: 202 after the commit, delivered to the sandbox, and the
intake counted in /metrics (accepted and refused)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx

from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import AUTH, running_gateway, wait_settled


async def test_cda_post_is_delivered_and_counted(tmp_path) -> None:
    rng = random.Random(12)
    now = datetime.now(UTC).replace(microsecond=0)
    cda = build_sample_cda(
        now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng), sender=None
    )
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, base):
            async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH["intake"]) as client:
                ok = await client.post("/v1/documents", content=cda, headers={"Content-Type": "application/xml"})
                assert ok.status_code == 202, ok.text
                assert ok.json()["journal_id"] > 0
                bad = await client.post("/v1/documents", content=b"<x/>", headers={"Content-Type": "text/plain"})
                assert bad.status_code == 415 and bad.headers["content-type"].startswith("application/problem+json")
                [row] = await wait_settled(gw, 1)
                assert row.state is State.DELIVERED, row.detail
                metrics = (await client.get("/metrics")).text
                assert row.sender == "LABO^HTTP"  # the intake token's sender, not the intake's default
    assert 'passerelle_messages_received_total{channel="http",kind="cda"} 1.0' in metrics
    assert 'passerelle_intake_rejections_total{channel="http",reason="content_type"} 1.0' in metrics
