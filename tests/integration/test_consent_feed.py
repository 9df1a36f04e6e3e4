"""The PAM France consent feed end to end: an ADT carrying ZFA, sent over a real MLLP socket, changes
what the gateway does with the same patient's next report (real SQLite journal, real sandbox over HTTP).

A merge (ADT^A40) is a consent feed for the surviving patient (PID) only: the MRG patient's entry is
not read nor changed, and no document moves from one INS to another (docs/bad-input.md, B-HL7)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from passerelle.connector.cli.send import send_files
from passerelle.mappings.samples.messages import build_adt_consent, generate_samples, synthetic_patient
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, sandbox_pushes, wait_settled


def _as_merge(adt: bytes, old_ins: str) -> bytes:
    """The same ADT as an A40 merge whose MRG names another patient (``old_ins``)."""
    segments = adt.split(b"\r")
    msh = segments[0].replace(b"ADT^A01^ADT_A01", b"ADT^A40^ADT_A39")
    mrg = f"MRG|{old_ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS".encode()
    body = [s for s in segments[1:] if s and not s.startswith(b"PV1")]
    pid_at = next(i for i, s in enumerate(body) if s.startswith(b"PID"))
    return b"\r".join([msh, *body[: pid_at + 1], mrg, *body[pid_at + 1 :]]) + b"\r"


async def test_an_opposition_in_zfa_keeps_the_next_report_out_of_the_space(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    opposed, other = generate_samples(2, seed=31, now=now)
    adt = build_adt_consent(now=now, control_id="ADT1", patient=opposed.patient, feeding="IO")
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            [consent_ack] = await send_files("127.0.0.1", gw.mllp.port, [("adt", adt)])
            assert consent_ack.code == "AA", consent_ack
            await wait_settled(gw, 1)
            acks = await send_files("127.0.0.1", gw.mllp.port, [("a", opposed.raw), ("b", other.raw)])
            assert [a.code for a in acks] == ["AA", "AA"]
            rows = {r.message_id: r for r in await wait_settled(gw, 3)}
            entry = await gw.journal.registry_get(opposed.patient.ins)
            assert entry is not None and entry.feeding == "IO"
            refused = rows[opposed.control_id]
            assert refused.state is State.REFUSED and "oppos" in refused.detail.lower(), refused.detail
            assert opposed.patient.ins not in refused.detail
            assert rows[other.control_id].state is State.DELIVERED
            assert await sandbox_pushes(sandbox.admin, opposed.patient.ins) == []
            assert len(await sandbox_pushes(sandbox.admin, other.patient.ins)) == 1


async def test_a_merge_records_consent_for_the_surviving_patient_only(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    survivor, merged = synthetic_patient(random.Random(41)), synthetic_patient(random.Random(42))
    merged_consent = build_adt_consent(now=now, control_id="ADT2", patient=merged, feeding="INO")
    merge = _as_merge(build_adt_consent(now=now, control_id="ADT3", patient=survivor, feeding="IO"), old_ins=merged.ins)
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            acks = await send_files("127.0.0.1", gw.mllp.port, [("consent", merged_consent), ("merge", merge)])
            assert [a.code for a in acks] == ["AA", "AA"], acks
            rows = await wait_settled(gw, 2)
            assert [r.state for r in rows] == [State.DELIVERED, State.DELIVERED], [r.detail for r in rows]
            kept, recorded = (await gw.journal.registry_get(merged.ins)), (await gw.journal.registry_get(survivor.ins))
            assert kept is not None and kept.feeding == "INO"
            assert recorded is not None and recorded.feeding == "IO"
