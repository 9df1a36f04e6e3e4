"""The ANS example messages over real MLLP (issue 13 item 7): every example gets the reply that
docs/conformance.md documents, and the V1.2 / V2.0 examples of the transmission volet, given back the
document the ANS replaced by a sentence in the published files, are acknowledged and delivered."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

from passerelle.mappings.document import INS_NIR_OID
from passerelle.mappings.samples.messages import SyntheticPatient, build_sample_cda
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import running_gateway, sandbox_pushes, wait_settled
from tests.support.mllp_peer import exchange

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EXAMPLES = "hl7v2/fr-ans-hl7v2-exemples"
VOL = "Volets/TRANS_DOC_CDA_HL7V2"
#: The sentence the ANS put where the base64 CDA goes ("Document médical au format CDA...").
PLACEHOLDER = re.compile(rb"(\^(?:TEXT|text)\^XML\^Base64\^)(RG9jdW1lbnQg[A-Za-z0-9+/=]*)")


async def _exchange(port: int, raw: bytes) -> tuple[str, str, str]:
    """(MSA-1 and ERR-3 as "AE 102", MSA-2, ERR-2) of the reply to one message over MLLP."""
    [reply] = await exchange(port, [raw], timeout=30)
    segments = {line[:3]: line.split("|") for line in reply.decode().split("\r") if line}
    msa, err = segments["MSA"], segments.get("ERR")
    return msa[1] + (" " + err[3].split("^")[0] if err else ""), msa[2], err[2] if err else ""


def _documented() -> dict[str, tuple[str, str]]:
    """file -> (reply alone in test, reply in order to one gateway), from docs/conformance.md."""
    rows = {}
    for line in (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if line.startswith("| `") and len(cells) >= 6:
            rows[cells[0].strip("| `")] = (cells[1], cells[4])
    return rows


async def test_every_example_gets_the_documented_reply_over_mllp(corpus_dir: Path, tmp_path: Path) -> None:
    documented = _documented()
    root = corpus_dir / EXAMPLES
    files = sorted(p for p in root.rglob("*") if p.suffix in (".hl7", ".er7"))
    assert sorted(documented) == sorted(str(p.relative_to(root)) for p in files)
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            for path in files:
                raw = path.read_bytes()
                code, msa2, _ = await _exchange(gw.mllp.port, raw)
                msh10 = raw.split(b"\n", 1)[0].split(b"|")[9].decode()
                assert (code, msa2) == (documented[str(path.relative_to(root))][1], msh10), path.name


def _with_document(raw: bytes, cdas: list[bytes]) -> bytes:
    """The example with each placeholder sentence replaced by the base64 of a real CDA."""
    pieces = iter(cdas)
    return PLACEHOLDER.sub(lambda m: m.group(1) + base64.b64encode(next(pieces)), raw)


def _cda(patient: SyntheticPatient, document_id: str, type_code: bytes = b"") -> bytes:
    cda = build_sample_cda(now=NOW, patient=patient, document_id=document_id, set_id=document_id + ".0")
    return cda.replace(b'code="11502-2"', b'code="' + type_code + b'"', 1) if type_code else cda


NESSI = SyntheticPatient(
    "NESSI", "RUTH", "RUTH", "F", "19770714", "63220", "", "277076322082910", "405660", INS_NIR_OID
)
PATA = SyntheticPatient("PatA", "DOMINIQUE", "DOMINIQUE", "M", "20050101", "63220", "", "274075176079430", "405660",
                        INS_NIR_OID)  # fmt: skip
DE_VINCI = SyntheticPatient("DE VINCI", "DONATELLO", "DONATELLO", "M", "20100807", "63220", "", "276037510669380",
                            "405660", INS_NIR_OID)  # fmt: skip


async def test_v12_and_v20_examples_with_their_document_are_acknowledged_and_delivered(
    corpus_dir: Path, tmp_path: Path
) -> None:
    root = corpus_dir / EXAMPLES / VOL
    oru_v20 = _with_document(
        (root / "V2.0/ORU/Transmission_initiale_ORU/message_ORU_CR_Bio_INIT_N1_N3.hl7").read_bytes(),
        [_cda(NESSI, "1.2.250.1.999.20.1"), _cda(NESSI, "1.2.250.1.999.20.2")],
    )
    mdm_v20 = _with_document(
        (root / "V2.0/MDM/Transmission_initiale_MDM/message_MDM_CR_Radio_INIT_N1.er7").read_bytes(),
        [_cda(PATA, "1.2.250.1.999.20.3", b"18748-4")],
    )
    oru_v12 = _with_document((root / "V1.2/ORU/message.hl7").read_bytes(), [_cda(DE_VINCI, "1.2.250.1.999.12.1")])
    # the three examples share MSH-10 015: give each its own control id, as a real sender would
    messages = [m.replace(b"|015|P|", f"|{i}|P|".encode(), 1) for i, m in enumerate((oru_v20, mdm_v20, oru_v12), 1)]
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            replies = [await _exchange(gw.mllp.port, raw) for raw in messages]
            assert [(code, msa2) for code, msa2, _ in replies] == [("AA", "1"), ("AA", "2"), ("AA", "3")]
            rows = {r.message_id: r for r in await wait_settled(gw, 3)}
            assert rows["1"].state is State.DELIVERED  # ORC-1 SC, OBX-11 F: two renderings published
            assert rows["2"].state is State.DELIVERED  # MDM T02 without ORC, MSH-2 as published
            # the V1.2 example's INS fails its NIR key (and it sends no PID-32 VALI): acknowledged, then
            # refused by the identity rules before anything reaches the space
            assert rows["3"].state is State.REFUSED and "identity not qualified" in rows["3"].detail
            assert len(await sandbox_pushes(sandbox.admin, NESSI.ins)) == 2
            assert len(await sandbox_pushes(sandbox.admin, PATA.ins)) == 1
            assert await sandbox_pushes(sandbox.admin, DE_VINCI.ins) == []
