"""The gateway with ``space.transport: dmp`` against an independent SOAP receiver over mutual TLS 1.2 on
loopback: the receiver checks every request part by part (MTOM, envelope, WS-A, VIHF content and
signature, ebRIM against the XSDs, DMP metadata rules, hash and size, XAdES digests and signature)."""

from __future__ import annotations

import asyncio
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from passerelle.connector.cli.main import app as cli
from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.queue.model import State
from tests.support.dmp_stack import dmp_stack
from tests.support.gateway import post_cda, wait_settled

pytestmark = pytest.mark.corpus

SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)
KOS = "dicom/kos/fr-drimbox/ko.dcm"


def schemas(corpus: Path) -> Path:
    return corpus / "schemas" / "xds-ebrim-3.0"


def cda_pair(seed: int) -> tuple[bytes, bytes, str, str]:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    patient = synthetic_patient(rng)
    first, second, set_id = root_only_oid(rng), root_only_oid(rng), root_only_oid(rng)
    v1 = build_sample_cda(now=now, patient=patient, document_id=first, set_id=set_id, sender=None)
    v2 = build_sample_cda(
        now=now, patient=patient, document_id=second, set_id=set_id, version=2, sender=None, replaces=first
    )
    return v1, v2, first, second


async def test_ans_oru_cda_http_and_kos_folder_are_delivered(tmp_path: Path, corpus_dir: Path) -> None:
    inbox = tmp_path / "dicom-in"
    inbox.mkdir()
    folder = {"dicom_folder.enabled": True, "dicom_folder.path": inbox, "dicom_folder.settle_s": 0,
              "dicom_folder.poll_interval_s": 0.1}  # fmt: skip
    async with dmp_stack(tmp_path, schemas(corpus_dir), **folder) as (receiver, gateway, base):
        assert gateway.mllp is not None
        [ack] = await send_files("127.0.0.1", gateway.mllp.port, [("segur", (corpus_dir / SEGUR).read_bytes())])
        assert ack.code == "AA"
        await post_cda(base, cda_pair(3)[0])
        shutil.copy(corpus_dir / KOS, inbox / "ko.dcm")
        rows = await wait_settled(gateway, 3)
        assert [r.state for r in rows] == [State.DELIVERED] * 3, [r.detail for r in rows]
        assert receiver.problems == []
        events = [e for r in rows for e in await gateway.journal.events(r.id) if e.kind == "delivered"]
        assert all("ITI-41 Success" in str(e.data.get("answer")) for e in events)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
    assert receiver.transactions().count("ITI-41") == 3
    assert {d.mime_type for d in receiver.documents()} == {"text/xml", "application/dicom"}
    assert 'passerelle_space_calls_total{operation="provide",outcome="ok",transport="dmp"} 3.0' in metrics
    assert 'passerelle_dmp_exchanges_total{outcome="ok",transaction="ITI-41"} 3.0' in metrics


async def test_replacement_is_iti18_then_iti41_with_rplc(tmp_path: Path, corpus_dir: Path) -> None:
    v1, v2, first, second = cda_pair(5)
    async with dmp_stack(tmp_path, schemas(corpus_dir)) as (receiver, gateway, base):
        receiver.multipart_answers = False  # plain SOAP answers here, multipart in the other tests
        await post_cda(base, v1)
        await wait_settled(gateway, 1)
        await post_cda(base, v2)
        rows = await wait_settled(gateway, 2)
        assert [r.state for r in rows] == [State.DELIVERED] * 2, [r.detail for r in rows]
    assert receiver.problems == []
    assert receiver.transactions() == ["TD0.2", "ITI-41", "ITI-18", "ITI-41"]
    old = receiver.store[first][0]
    assert old.status.endswith(":Deprecated")
    assert receiver.seen[-1].detail["rplc"] == [old.entry_uuid]
    assert receiver.store[second][0].status.endswith(":Approved")


async def test_business_failure_is_refused_with_its_code(tmp_path: Path, corpus_dir: Path) -> None:
    async with dmp_stack(tmp_path, schemas(corpus_dir)) as (receiver, gateway, base):
        receiver.plan = ["failure:XDSUnknownPatientId"]
        await post_cda(base, cda_pair(7)[0])
        [row] = await wait_settled(gateway, 1)
    assert row.state is State.REFUSED and "XDSUnknownPatientId" in row.detail
    args = ["messages", "show", str(row.id), "--data-dir", str(tmp_path / "gw")]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    assert "XDSUnknownPatientId" in result.output


async def test_receiver_fault_and_503_are_retried(tmp_path: Path, corpus_dir: Path) -> None:
    async with dmp_stack(tmp_path, schemas(corpus_dir)) as (receiver, gateway, base):
        receiver.plan = ["receiver_fault", "http503"]
        await post_cda(base, cda_pair(9)[0])
        [row] = await wait_settled(gateway, 1)
        for _ in range(50):
            if receiver.transactions().count("ITI-41") >= 3:
                break
            await asyncio.sleep(0.1)
        events = await gateway.journal.events(row.id)
    assert row.state is State.DELIVERED, row.detail
    assert [s.answer for s in receiver.seen if s.transaction == "ITI-41"] == ["receiver_fault", "503", "Success"]
    assert [e.kind for e in events].count("retry") == 2
    assert receiver.problems == []
