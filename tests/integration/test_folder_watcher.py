"""Watched folders through the whole gateway: a file that cannot be read or decoded goes to failed/ with
its reason, is counted and audited, and the folder goes on with the next file, which is delivered."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.observability.audit import AuditAction
from passerelle.queue.audit import AuditQuery
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.dicom_samples import make_kos
from tests.support.gateway import running_gateway, wait_settled
from tests.support.waiting import until

ROOT = os.geteuid() == 0


async def test_bad_files_go_to_failed_and_the_next_file_is_delivered(tmp_path: Path) -> None:
    rng = random.Random(21)
    now = datetime.now(UTC).replace(microsecond=0)
    good = build_sample_cda(
        now=now, patient=synthetic_patient(rng), document_id=root_only_oid(rng), set_id=root_only_oid(rng), sender=None
    )
    inbox = tmp_path / "cda-in"
    inbox.mkdir()
    (inbox / "a-junk.xml").write_bytes(b"this is not XML <<<")
    if not ROOT:  # root reads anything: the unreadable case then runs in the unit tests only
        locked = inbox / "b-locked.xml"
        locked.write_bytes(good)
        locked.chmod(0)
    (inbox / "c-good.xml").write_bytes(good)
    overrides = {"cda.folder": inbox, "cda.poll_interval_s": 0.05}
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **overrides) as (gw, base):
            await until(lambda: (inbox / "processed" / "c-good.xml").exists())
            [row] = await wait_settled(gw, 1)
            assert row.state is State.DELIVERED, row.detail
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                metrics = (await client.get("/metrics")).text
            trail = await gw.audit_store.query(AuditQuery(action=AuditAction.REFUSAL))
    reason = (inbox / "failed" / "a-junk.xml.reason.txt").read_text()
    assert reason.startswith("reason: ") and "status: 400" in reason
    assert 'passerelle_messages_received_total{channel="folder",kind="cda"} 1.0' in metrics
    refused = [r for r in trail if r.actor == "folder:cda-folder"]
    assert refused and all("moved to failed/" in r.detail for r in refused)
    assert "a-junk" not in " ".join(r.detail for r in refused)  # file names may hold names: never audited
    if not ROOT:
        unreadable = (inbox / "failed" / "b-locked.xml.reason.txt").read_text()
        assert "reason: unreadable" in unreadable and "Permission denied" in unreadable
        assert 'passerelle_intake_rejections_total{channel="folder",reason="unreadable"} 1.0' in metrics
        assert len(refused) == 2


@pytest.mark.skipif(ROOT, reason="root can read a file whatever its mode")
async def test_unreadable_dicom_file_goes_to_failed(tmp_path: Path) -> None:
    inbox = tmp_path / "dicom-in"
    inbox.mkdir()
    (inbox / "a.dcm").write_bytes(make_kos())
    (inbox / "a.dcm").chmod(0)
    overrides = {"dicom_folder.enabled": True, "dicom_folder.path": inbox, "dicom_folder.poll_interval_s": 0.05,
                 "dicom_folder.settle_s": 0}  # fmt: skip
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **overrides):
        await until(lambda: (inbox / "failed" / "a.dcm.reason.txt").exists())
    assert "reason: unreadable" in (inbox / "failed" / "a.dcm.reason.txt").read_text()
