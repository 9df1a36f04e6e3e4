"""What the door accepts, the worker maps: a site's intake settings hold from intake to delivery
(real MLLP and HTTP sockets, a SQLite journal, the sandbox over HTTP).

- A lab allowed Windows-1252 (`hl7.senders`, `allow_cp1252`) sends a report whose 8859/1 text carries a
  C1 byte (the ’ of Windows-1252, 0x92): AA and delivered, not accepted and then failed by the worker
  (B-HL7-12); the worker maps it from intake's reading (ADR 0026).
- A site that raised `cda.max_depth` posts a CDA nested deeper than the default: 202 and delivered
  (B-CDA).
- Discrete lab results from a sender without a laboratory: refused at the door (AR), since the worker
  could not make them a document (B-HL7-6).
- `passerelle map --config` previews with the same per-sender options as the gateway."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from passerelle.connector.cli.main import app
from passerelle.connector.cli.send import send_files
from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.mappings.cda.safe_xml import DEFAULT_LIMITS
from passerelle.mappings.codes.tables import loinc_table_file_name
from passerelle.mappings.samples.lab import SAMPLE_INS, SAMPLE_LOINC_CSV, sample_oru
from passerelle.mappings.samples.messages import build_sample_cda, generate_samples, root_only_oid, synthetic_patient
from passerelle.queue.model import State
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.testing import running_sandbox
from tests.support.gateway import post_cda, running_gateway, sandbox_pushes, wait_settled

SENDER = "SIL-SYNTH^LABO-SYNTH"  # MSH-3.1^MSH-4.1 of the synthetic samples


def _windows_1252_report(seed: int) -> tuple[bytes, str]:
    [sample] = generate_samples(1, seed=seed, now=datetime.now(UTC).replace(microsecond=0))
    text = sample.raw.decode("utf-8").replace("|UNICODE UTF-8|", "|8859/1|")
    text = text.replace("CR d'examens biologiques", "CR d\u2019examens biologiques")
    raw = text.encode("cp1252")
    assert b"\x92" in raw and b"|8859/1|" in raw
    return raw, sample.patient.ins


async def test_a_sender_allowed_windows_1252_is_delivered(tmp_path: Path) -> None:
    raw, ins = _windows_1252_report(seed=51)
    senders = {SENDER: {"allow_cp1252": True}}
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **{"hl7.senders": senders}) as (gw, _):
            assert gw.mllp is not None
            [ack] = await send_files("127.0.0.1", gw.mllp.port, [("cp1252", raw)])
            assert ack.code == "AA", ack
            [row] = await wait_settled(gw, 1)
            assert row.state is State.DELIVERED, row.detail
            assert len(await sandbox_pushes(sandbox.admin, ins)) == 1
            # mapped from what intake read with the sender's options (ADR 0026), not decoded again
            assert isinstance(gw.worker.mapper, RowMapper) and gw.worker.mapper.decoded is not None
            assert (gw.worker.mapper.decoded.hits, gw.worker.mapper.decoded.misses) == (1, 0)


async def test_the_same_report_from_a_sender_not_allowed_is_refused_at_the_door(tmp_path: Path) -> None:
    raw, ins = _windows_1252_report(seed=52)
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir) as (gw, _):
            assert gw.mllp is not None
            [ack] = await send_files("127.0.0.1", gw.mllp.port, [("cp1252", raw)])
            assert ack.code == "AR", ack
            [row] = await wait_settled(gw, 1)
            assert row.state is State.REJECTED and "ERR-3 102" in row.detail, row.detail
            assert await sandbox_pushes(sandbox.admin, ins) == []


def _deep_cda(depth: int) -> tuple[bytes, str]:
    """A sample CDA whose narrative nests ``depth`` ``content`` elements (valid CDA: StrucDoc.Text)."""
    rng = random.Random(61)
    patient = synthetic_patient(rng)
    now = datetime.now(UTC).replace(microsecond=0)
    doc = build_sample_cda(now=now, patient=patient, document_id=root_only_oid(rng), set_id=root_only_oid(rng))
    nested = "<content>" * depth + "note" + "</content>" * depth
    return doc.replace(b"<text>", f"<text><paragraph>{nested}</paragraph>".encode(), 1), patient.ins


async def test_a_cda_within_the_sites_raised_depth_is_delivered(tmp_path: Path) -> None:
    deep, ins = _deep_cda(DEFAULT_LIMITS.max_depth + 20)  # deeper than the default, within the parser's 256
    limits = {"cda.max_depth": 256}
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **limits) as (gw, base):
            await post_cda(base, deep)
            [row] = await wait_settled(gw, 1)
            assert row.state is State.DELIVERED, row.detail
            assert len(await sandbox_pushes(sandbox.admin, ins)) == 1


async def test_lab_results_from_a_sender_without_a_laboratory_are_refused_at_the_door(tmp_path: Path) -> None:
    """LAB-3 results need the sender's laboratory (`lab.senders`) to become a CR-BIO: without one, AR 200
    naming MSH-3 at once (a configuration matter), not AA and a refusal the sender never hears of."""
    loinc = tmp_path / "loinc"
    loinc.mkdir()
    (loinc / loinc_table_file_name("SIL-DEMO^LABO-DEMO")).write_text(SAMPLE_LOINC_CSV, encoding="utf-8")
    results = sample_oru(control_id="LAB0009").encode("iso-8859-1")
    async with running_sandbox(SandboxConfig(data_dir=tmp_path / "sandbox")) as sandbox:
        async with running_gateway(tmp_path / "gw", sandbox.fhir, **{"lab.loinc_dir": loinc}) as (gw, _):
            assert gw.mllp is not None
            [ack] = await send_files("127.0.0.1", gw.mllp.port, [("lab", results)])
            assert (ack.code, ack.control_id) == ("AR", "LAB0009"), ack
            [row] = await wait_settled(gw, 1)
            assert row.state is State.REJECTED, row.state
            assert row.detail.startswith("lab_not_configured: ERR-3 200 MSH^1^3"), row.detail
            assert await sandbox_pushes(sandbox.admin, SAMPLE_INS) == []


def test_the_preview_reads_a_message_with_the_sites_sender_options(tmp_path: Path) -> None:
    raw, _ = _windows_1252_report(seed=53)
    report = tmp_path / "report.hl7"
    report.write_bytes(raw)
    runner = CliRunner()
    for allowed, expected in ((True, 0), (False, 1)):
        config = tmp_path / f"site-{allowed}.yaml"
        senders = f"hl7:\n  senders:\n    {SENDER}: {{allow_cp1252: true}}\n" if allowed else ""
        config.write_text("environment: test\n" + senders, encoding="utf-8")
        out = tmp_path / f"out-{allowed}"
        result = runner.invoke(app, ["map", str(report), "--out", str(out), "--config", str(config)])
        assert result.exit_code == expected, result.output
        assert ("OK" in result.output) is allowed and ("encoding" in result.output) is not allowed, result.output
