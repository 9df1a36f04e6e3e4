"""Consent end to end: opposed, closed and blocked-author documents never reach the space (the sandbox
records no push), each with its reason in the browser and the audit trail; a space that did not exist
yet parks documents, and they go through once it is active."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import httpx

from passerelle.connector.cli.send import send_files
from passerelle.mappings.document import Provenance
from passerelle.mappings.hl7v2.documents import map_hl7_documents
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.audit import AuditQuery
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, sandbox_pushes, wait_settled


async def test_refusals_and_parking_against_the_sandbox(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nparking:\n  recheck_minutes: 0.01\n  unknown_status_recheck_minutes: 0.01\n")
    samples = generate_samples(4, seed=77, now=datetime.now(UTC).replace(microsecond=0))
    opposed, closed, blocked, absent = samples
    author = map_hl7_documents(
        blocked.raw, sender_charset=None, test_environment=True, now=datetime.now(UTC), provenance=Provenance()
    )[0].author.person_id
    assert author

    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with httpx.AsyncClient(base_url=sandbox.admin, timeout=10) as admin:
            for sample, state in (
                (opposed, {"status": "ACTIF", "opposed": True}),
                (closed, {"status": "FERME"}),
                (blocked, {"status": "ACTIF", "blocked_authors": [author]}),
                (absent, {"status": "INEXISTANT"}),
            ):
                (await admin.put(f"/patients/{sample.patient.ins}", json=state)).raise_for_status()

            data_dir = tmp_path / "gw"
            async with running_gateway(
                data_dir, sandbox.fhir, **{"consent.rules_file": rules, "consent.status_ttl_s": 0}
            ) as (gw, _):
                acks = await send_files("127.0.0.1", gw.mllp.port, [(s.name, s.raw) for s in samples])
                assert [a.code for a in acks] == ["AA"] * 4
                rows = {r.message_id: r for r in await wait_settled(gw, 4)}
                assert rows[opposed.control_id].state is State.REFUSED
                assert rows[opposed.control_id].detail == "patient_opposed"
                assert rows[closed.control_id].state is State.REFUSED
                assert rows[closed.control_id].detail == "space_closed"
                assert rows[blocked.control_id].state is State.REFUSED
                assert rows[blocked.control_id].detail == "author_blocked"
                assert rows[absent.control_id].state is State.PARKED
                assert rows[absent.control_id].detail == "space_not_active"
                for sample in samples:
                    assert await sandbox_pushes(sandbox.admin, sample.patient.ins) == []

                # The audit trail says why, with identifiers only.
                assert gw.audit_store is not None
                trail = await gw.audit_store.query(AuditQuery(patient_id=opposed.patient.ins))
                assert any(r.outcome.value == "refuse" and r.reason == "patient_opposed" for r in trail)

                # The space is opened: the parked document goes through, the refused ones stay refused.
                (await admin.put(f"/patients/{absent.patient.ins}", json={"status": "ACTIF"})).raise_for_status()
                for _ in range(100):
                    if (await gw.journal.get(rows[absent.control_id].id)).state is State.DELIVERED:
                        break
                    await asyncio.sleep(0.1)
                assert (await gw.journal.get(rows[absent.control_id].id)).state is State.DELIVERED
                assert len(await sandbox_pushes(sandbox.admin, absent.patient.ins)) == 1
                assert await sandbox_pushes(sandbox.admin, opposed.patient.ins) == []

            # `passerelle messages show` tells the story from the journal file.
            shown = subprocess.run(
                [sys.executable, "-m", "passerelle", "messages", "show", str(rows[blocked.control_id].id),
                 "--data-dir", str(data_dir)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert "author_blocked" in shown.stdout and "consent" in shown.stdout
