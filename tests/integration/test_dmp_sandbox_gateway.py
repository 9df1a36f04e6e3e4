"""The gateway with ``space.transport: dmp`` against the real sandbox's DMP services (no shared code: the
sandbox checks with its own receiver), over real sockets: every input kind ends in the patient's space,
replacement and deletion change the registry, and the space's states and refusals reach the journal."""

from __future__ import annotations

import asyncio
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from passerelle.connector.app import Gateway
from passerelle.connector.cli.main import app as cli
from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import build_cda, build_oru, root_only_oid, synthetic_patient
from passerelle.queue.model import Row, State
from tests.support.dmp_stack import sandbox_dmp_stack
from tests.support.gateway import wait_settled

pytestmark = pytest.mark.corpus

SEGUR = (
    "hl7v2/fr-ans-hl7v2-exemples/Vague_2/Trans_Doc-CDA-HL7V2/TRANSMISSION_DOCS_CDA_EN_HL7V2_V2.1/ORU/"
    "Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N3_SEGUR.hl7"
)
SEGUR_INS = "279035121518989"
KOS = "dicom/kos/fr-drimbox/ko.dcm"


async def admin(url: str, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.request(method, path, **kwargs)
        answer.raise_for_status()
        return answer.json() if "json" in answer.headers.get("content-type", "") else answer.text


async def post_cda(base: str, cda: bytes) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = await client.post("/v1/documents", content=cda, headers={"Content-Type": "application/xml"})
        assert answer.status_code == 202, answer.text


async def show(tmp_path: Path, row: Row) -> str:
    args = ["messages", "show", str(row.id), "--data-dir", str(tmp_path / "gw")]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def lab_report(seed: int, **changes: Any) -> tuple[bytes, str, str]:
    """A synthetic ORU (CR-BIO); returns (message, document id, patient INS)."""
    rng = random.Random(seed)
    patient = synthetic_patient(rng)
    doc_id = root_only_oid(rng)
    fields: dict[str, Any] = {"control_id": f"M{seed}", "document_id": doc_id, "set_id": root_only_oid(rng)}
    fields.update(changes)
    raw, _ = build_oru(now=datetime.now(UTC).replace(microsecond=0), patient=patient, **fields)
    return raw, fields["document_id"], patient.ins


async def test_ans_oru_cda_over_http_and_kos_end_in_the_patients_space(tmp_path: Path, corpus_dir: Path) -> None:
    inbox = tmp_path / "dicom-in"
    inbox.mkdir()
    folder = {"dicom_folder.enabled": True, "dicom_folder.path": inbox, "dicom_folder.settle_s": 0,
              "dicom_folder.poll_interval_s": 0.1}  # fmt: skip
    rng = random.Random(11)
    patient = synthetic_patient(rng)
    cda_id = root_only_oid(rng)
    cda = build_cda(now=datetime.now(UTC).replace(microsecond=0), patient=patient, document_id=cda_id,
                    set_id=root_only_oid(rng), sender=None)  # fmt: skip
    async with sandbox_dmp_stack(tmp_path, **folder) as (sandbox, gateway, base):
        assert gateway.mllp is not None
        [ack] = await send_files("127.0.0.1", gateway.mllp.port, [("segur", (corpus_dir / SEGUR).read_bytes())])
        assert ack.code == "AA"
        await post_cda(base, cda)
        shutil.copy(corpus_dir / KOS, inbox / "ko.dcm")
        rows = await wait_settled(gateway, 3)
        assert [r.state for r in rows] == [State.DELIVERED] * 3, [(r.channel, r.detail) for r in rows]
        pushes = await admin(sandbox, "GET", "/admin/pushes")
        page = await admin(sandbox, "GET", f"/patients/{SEGUR_INS}")
        found = await admin(
            sandbox, "GET", "/fhir/DocumentReference",
            params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{patient.ins}"},
            headers={"X-Actor": "professional:test"},
        )  # fmt: skip
        events = [e for r in rows for e in await gateway.journal.events(r.id) if e.kind == "delivered"]
    assert {(p["transport"], p["outcome"]) for p in pushes} == {("dmp", "accepted")} and len(pushes) == 3
    assert "1.2.250.1.213.1.1.9" in page and "<td>dmp</td>" in page
    assert f"urn:oid:{cda_id}" in str(found)
    assert all("ITI-41 Success" in str(e.data.get("answer")) for e in events)


def documents_of(page: str) -> dict[str, str]:
    """uniqueId -> status as the sandbox's administrator table lists them."""
    import re

    table = page.split('id="documents-all"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'data-unique-id="([^"]+)".*?<td>([a-z-]+)</td>\s*<td>', table, re.S)
    return dict(rows)


async def test_corrected_result_replaces_then_cancellation_deletes(tmp_path: Path) -> None:
    rng = random.Random(21)
    patient = synthetic_patient(rng)
    now = datetime.now(UTC).replace(microsecond=0)
    first, second, set_id = root_only_oid(rng), root_only_oid(rng), root_only_oid(rng)
    common = {"now": now, "patient": patient, "set_id": set_id}
    v1, _ = build_oru(control_id="V1", document_id=first, **common)
    v2, _ = build_oru(control_id="V2", document_id=second, version=2, order_control="RO", replaces=first, **common)
    cancel, _ = build_oru(control_id="V3", document_id=second, version=2, order_control="CA", replaces=first, **common)
    async with sandbox_dmp_stack(tmp_path) as (sandbox, gateway, _base):
        assert gateway.mllp is not None
        for count, message in enumerate((v1, v2), start=1):
            [ack] = await send_files("127.0.0.1", gateway.mllp.port, [(f"v{count}", message)])
            assert ack.code == "AA"
            rows = await wait_settled(gateway, count)
        assert [r.state for r in rows] == [State.DELIVERED] * 2, [r.detail for r in rows]
        replaced = documents_of(await admin(sandbox, "GET", f"/patients/{patient.ins}"))
        [ack] = await send_files("127.0.0.1", gateway.mllp.port, [("v3", cancel)])
        rows = await wait_settled(gateway, 3)
        assert {r.message_id: r.state for r in rows}["V3"] is State.DELIVERED, [r.detail for r in rows]
        deleted = documents_of(await admin(sandbox, "GET", f"/patients/{patient.ins}"))
        traces = await admin(sandbox, "GET", f"/admin/patients/{patient.ins}/traces")
        events = {r.message_id: await gateway.journal.events(r.id) for r in rows}
    assert (replaced[first], replaced[second]) == ("superseded", "current")
    assert (deleted[first], deleted[second]) == ("superseded", "entered-in-error")
    details = [t["detail"] for t in traces]
    assert details.count("ITI-18 1 match(es)") >= 1 and "ITI-57 Deleted" in details
    delivered = {m: next(e for e in ev if e.kind == "delivered").data["answer"] for m, ev in events.items()}
    assert "ITI-41 Success" in str(delivered["V2"]) and "ITI-57 Success" in str(delivered["V3"])
