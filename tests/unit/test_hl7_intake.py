"""Hl7Intake with an in-memory fake journal: commit-then-ACK, dedup, conflicts, storage failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings, SenderOptions
from passerelle.errors import QueueUnavailableError
from passerelle.mappings.document import Flags
from passerelle.mappings.samples.messages import (
    Sender,
    build_adt_consent,
    build_lab_results,
    build_oru,
    generate_samples,
    root_only_oid,
    synthetic_patient,
)
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.model import AppendResult, Inbound, State

NOW = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)


@dataclass
class FakeJournal:
    """Dedup on dedup_key like the real journals; records every call."""

    rows: list[Inbound] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    fail: BaseException | None = None
    events: list[str] = field(default_factory=list)

    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        self.calls.append(len(items))
        self.events.append("append")
        if self.fail is not None:
            raise self.fail
        results = []
        for item in items:
            previous = next((r for r in self.rows if item.dedup_key and r.dedup_key == item.dedup_key), None)
            if previous is not None:
                row_id = self.rows.index(previous) + 1
                if previous.content_hash == item.content_hash:
                    results.append(AppendResult(row_id, duplicate=True, stored_ack=previous.ack))
                else:
                    results.append(AppendResult(row_id, conflict=True))
                continue
            self.rows.append(item)
            results.append(AppendResult(len(self.rows)))
        return results


@dataclass
class RecordingMetrics:
    messages: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[tuple[str, int]] = field(default_factory=list)

    def message(self, kind: str, outcome: str, reason: str) -> None:
        self.messages.append((kind, outcome, reason))

    def decode_warning(self, warning: str, count: int) -> None:
        self.warnings.append((warning, count))


def make(journal: FakeJournal, **settings: object) -> tuple[Hl7Intake, RecordingMetrics]:
    metrics = RecordingMetrics()
    conf = Hl7IntakeSettings(test_environment=True, **settings)  # type: ignore[arg-type]
    return Hl7Intake(journal.append, conf, metrics=metrics, clock=lambda: NOW), metrics


def segments(ack: bytes | None) -> dict[str, list[str]]:
    assert ack is not None
    out: dict[str, list[str]] = {}
    for line in ack.decode().split("\r"):
        if line:
            out.setdefault(line[:3], line.split("|"))
    return out


def sample_raw(**kwargs: object) -> bytes:
    return generate_samples(1, 7, NOW)[0].raw if not kwargs else _oru(**kwargs)


def _oru(**kwargs: object) -> bytes:
    import random

    rng = random.Random(3)
    raw, _ = build_oru(
        now=NOW,
        control_id=str(kwargs.pop("control_id", "C1")),
        patient=synthetic_patient(rng),
        document_id=root_only_oid(rng),
        set_id=root_only_oid(rng),
        **kwargs,  # type: ignore[arg-type]
    )
    return raw


async def test_valid_oru_is_committed_then_acknowledged_aa() -> None:
    journal = FakeJournal()
    intake, metrics = make(journal)
    raw = sample_raw()
    ack = await intake.handle(raw, "127.0.0.1:5000")
    seg = segments(ack)
    assert seg["MSA"][1:3] == ["AA", "S0007000000"]
    assert seg["MSH"][8] == "ACK^R01^ACK"
    assert seg["MSH"][2:6] == ["PASSERELLE", "GHT-SYNTH", "SIL-SYNTH", "LABO-SYNTH"]
    [row] = journal.rows
    assert row.state is State.ACCEPTED
    assert row.kind == "oru"
    assert row.dedup_key == "SIL-SYNTH^LABO-SYNTH^S0007000000"
    assert row.lane.startswith("ins:")
    assert row.ack == ack
    assert row.raw == raw
    assert metrics.messages == [("oru", "accepted", "")]


async def test_ack_is_not_returned_when_commit_fails() -> None:
    journal = FakeJournal(fail=QueueUnavailableError("disk full"))
    intake, metrics = make(journal)
    seg = segments(await intake.handle(sample_raw(), "peer"))
    assert seg["MSA"][1] == "AR"
    assert seg["ERR"][3].startswith("207^")
    assert metrics.messages[0][1] == "unavailable"


async def test_any_append_exception_becomes_ar_207_never_aa() -> None:
    journal = FakeJournal(fail=RuntimeError("boom /var/lib/secret"))
    intake, _ = make(journal)
    ack = await intake.handle(sample_raw(), "peer")
    seg = segments(ack)
    assert seg["MSA"][1] == "AR"
    assert b"secret" not in (ack or b"")


async def test_enhanced_mode_storage_failure_is_ce() -> None:
    raw = sample_raw().replace(b"|FRA|UNICODE UTF-8|", b"AL|NE|FRA|UNICODE UTF-8|", 1)
    raw = raw.replace(b"|P|2.5|||||", b"|P|2.5|||", 1)
    journal = FakeJournal(fail=QueueUnavailableError("down"))
    intake, _ = make(journal)
    seg = segments(await intake.handle(raw, "peer"))
    assert seg["MSA"][1] == "CE"


async def test_duplicate_same_bytes_replays_stored_ack() -> None:
    journal = FakeJournal()
    intake, metrics = make(journal)
    raw = sample_raw()
    first = await intake.handle(raw, "peer")
    second = await intake.handle(raw, "peer")
    assert second == first
    assert len(journal.rows) == 1
    assert metrics.messages[-1][1] == "duplicate"


async def test_duplicate_control_id_with_other_bytes_is_ar_205() -> None:
    journal = FakeJournal()
    intake, _ = make(journal)
    await intake.handle(_oru(control_id="X9"), "peer")
    other = _oru(control_id="X9", flags=Flags(masque_ps=True))
    seg = segments(await intake.handle(other, "peer"))
    assert seg["MSA"][1:3] == ["AR", "X9"]
    assert seg["ERR"][3].split("^")[0] == "205"
    assert seg["ERR"][2] == "MSH^1^10"
    assert len(journal.rows) == 1


async def test_rejected_message_is_journaled_without_dedup_key() -> None:
    journal = FakeJournal()
    intake, metrics = make(journal)
    raw = _oru(control_id="R1", with_sender_prt=False)
    seg = segments(await intake.handle(raw, "peer"))
    assert seg["MSA"][1:3] == ["AE", "R1"]
    assert seg["ERR"][2] == "PRT"
    assert seg["ERR"][3].split("^")[0] == "101"
    [row] = journal.rows
    assert row.state is State.REJECTED
    assert row.dedup_key == ""
    assert "PRT" in row.detail and row.raw == raw
    assert metrics.messages == [("hl7", "rejected", "required_field")]
    # a corrected resend with the same MSH-10 is accepted, not a conflict
    seg = segments(await intake.handle(_oru(control_id="R1"), "peer"))
    assert seg["MSA"][1] == "AA"


async def test_unreadable_msh_gets_ae_with_empty_msa2_and_is_journaled() -> None:
    journal = FakeJournal()
    intake, _ = make(journal)
    seg = segments(await intake.handle(b"PID|||123\r", "10.0.0.1:999"))
    assert seg["MSA"][1:3] == ["AE", ""]
    assert seg["ERR"][3].split("^")[0] == "100"
    [row] = journal.rows
    assert row.state is State.REJECTED and row.sender == "peer:10.0.0.1:999"


async def test_processing_id_not_accepted_is_ar_202() -> None:
    raw = sample_raw().replace(b"|P|2.5|", b"|T|2.5|", 1)
    production = Hl7Intake(FakeJournal().append, Hl7IntakeSettings(test_environment=False), clock=lambda: NOW)
    seg = segments(await production.handle(raw, "peer"))
    assert seg["MSA"][1] == "AR"
    assert seg["ERR"][3].split("^")[0] == "202"
    assert seg["ERR"][2] == "MSH^1^11"
    assert "only when the gateway runs in a test environment" in seg["MSA"][3]
    unknown = sample_raw().replace(b"|P|2.5|", b"|X|2.5|", 1)
    intake, _ = make(FakeJournal())
    assert segments(await intake.handle(unknown, "peer"))["ERR"][3].split("^")[0] == "202"


@pytest.mark.parametrize("processing_id", [b"D", b"T"])
async def test_debugging_and_training_messages_are_accepted_in_a_test_environment(processing_id: bytes) -> None:
    raw = sample_raw().replace(b"|P|2.5|", b"|" + processing_id + b"|2.5|", 1)
    intake, _ = make(FakeJournal())
    seg = segments(await intake.handle(raw, "peer"))
    assert seg["MSA"][1] == "AA" and seg["MSH"][10] == processing_id.decode()  # MSH-11 echoed


async def test_enhanced_ne_stores_but_sends_nothing() -> None:
    raw = sample_raw().replace(b"|P|2.5|||||FRA|", b"|P|2.5|||NE|NE|FRA|", 1)
    journal = FakeJournal()
    intake, _ = make(journal)
    assert await intake.handle(raw, "peer") is None
    assert journal.rows[0].state is State.ACCEPTED


async def test_enhanced_al_success_is_ca() -> None:
    raw = sample_raw().replace(b"|P|2.5|||||FRA|", b"|P|2.5|||AL|NE|FRA|", 1)
    seg = segments(await make(FakeJournal())[0].handle(raw, "peer"))
    assert seg["MSA"][1] == "CA"


async def test_enhanced_er_replies_only_on_error() -> None:
    good = sample_raw().replace(b"|P|2.5|||||FRA|", b"|P|2.5|||ER|NE|FRA|", 1)
    bad = good.replace(b"|P|2.5|", b"|D|2.5|", 1)
    intake, _ = make(FakeJournal())
    assert await intake.handle(good, "peer") is None
    assert segments(await intake.handle(bad, "peer"))["MSA"][1] == "CR"


async def test_batch_uses_one_journal_call_and_keeps_order() -> None:
    journal = FakeJournal()
    intake, _ = make(journal)
    samples = generate_samples(5, 11, NOW)
    payloads = [(s.raw, "peer") for s in samples] + [(b"garbage", "peer")]
    acks = await intake.handle_batch(payloads)
    assert journal.calls == [6]
    assert [segments(a)["MSA"][2] for a in acks[:5]] == [s.control_id for s in samples]
    assert segments(acks[5])["MSA"][1] == "AE"


async def test_too_large_message_is_rejected_with_msa2() -> None:
    intake, _ = make(FakeJournal(), max_message_bytes=1000)
    seg = segments(await intake.handle(sample_raw(), "peer"))
    assert seg["MSA"][1:3] == ["AE", "S0007000000"]


async def test_cp1252_trap_rejected_unless_sender_allows() -> None:
    raw = _oru(sender=Sender(charset="8859/1")).replace(b"^D^^^RPPS", b"\x9c^D^^^RPPS", 1)  # cp1252 0x9C = oe ligature
    journal = FakeJournal()
    intake, _ = make(journal)
    seg = segments(await intake.handle(raw, "peer"))
    assert seg["MSA"][1] == "AR" and seg["ERR"][3].split("^")[0] == "102"
    allowed, metrics = make(FakeJournal(), senders={"SIL-SYNTH^LABO-SYNTH": SenderOptions(allow_cp1252=True)})
    assert segments(await allowed.handle(raw, "peer"))["MSA"][1] == "AA"
    assert ("cp1252_bytes", 1) in metrics.warnings


async def test_lab_results_and_adt_consent_are_accepted() -> None:
    import random

    patient = synthetic_patient(random.Random(1))
    journal = FakeJournal()
    intake, _ = make(journal)
    lab = await intake.handle(build_lab_results(now=NOW, control_id="L1", patient=patient), "p")
    adt = await intake.handle(build_adt_consent(now=NOW, control_id="A1", patient=patient), "p")
    assert segments(lab)["MSA"][1] == "AA"
    assert segments(adt)["MSH"][8] == "ACK^A01^ACK"
    assert [r.kind for r in journal.rows] == ["lab", "adt"]
    assert journal.rows[0].lane == journal.rows[1].lane == f"ins:{patient.ins}"


@pytest.mark.parametrize("payload", [b"", b"MSH", b"MSH|^~\\&|", b"\xff\xfeM\x00S\x00H\x00"])
async def test_degenerate_payloads_get_a_negative_ack(payload: bytes) -> None:
    seg = segments(await make(FakeJournal())[0].handle(payload, "peer"))
    assert seg["MSA"][1] in {"AE", "AR"}


async def test_oversize_frame_is_refused_with_msa2_and_journaled() -> None:
    journal = FakeJournal()
    intake, metrics = make(journal)
    first_segment = sample_raw().split(b"\r", 1)[0]
    seg = segments(await intake.handle_oversize(first_segment, 99_000_000, "peer"))
    assert seg["MSA"][1:3] == ["AE", "S0007000000"]
    assert seg["ERR"][3].split("^")[0] == "207"
    assert journal.rows[0].state is State.REJECTED
    assert metrics.messages == [("hl7", "rejected", "too_large")]


async def test_oversize_without_msh_still_answers() -> None:
    seg = segments(await make(FakeJournal(fail=RuntimeError("x")))[0].handle_oversize(b"", 10, "peer"))
    assert seg["MSA"][1:3] == ["AE", ""]


async def test_unexpected_bug_becomes_ar_207_and_a_rejected_row(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import passerelle.connector.intake.hl7 as module

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("PAT-SECRET")

    monkeypatch.setattr(module, "classify", broken)
    journal = FakeJournal()
    intake, _ = make(journal)
    seg = segments(await intake.handle(sample_raw(), "peer"))
    assert seg["MSA"][1:3] == ["AR", "S0007000000"]
    assert seg["ERR"][3].split("^")[0] == "207"
    assert journal.rows[0].state is State.REJECTED
    assert "KeyError" in caplog.text and "PAT-SECRET" not in caplog.text


async def test_decode_warnings_are_counted() -> None:
    raw = b"\xef\xbb\xbf" + sample_raw()
    intake, metrics = make(FakeJournal())
    await intake.handle(raw, "peer")
    assert ("utf8_bom", 1) in metrics.warnings


def test_settings_refuse_an_unknown_fallback_charset() -> None:
    import pydantic

    assert Hl7IntakeSettings(fallback_charset="8859/15").fallback_charset == "8859/15"
    assert SenderOptions(fallback_charset="cp1252").fallback_charset == "cp1252"
    with pytest.raises(pydantic.ValidationError):
        Hl7IntakeSettings(fallback_charset="klingon")
    with pytest.raises(pydantic.ValidationError):
        Hl7IntakeSettings(senders={"A": {"fallback_charset": "nope"}})  # type: ignore[dict-item]


async def test_same_contract_with_the_real_memory_journal() -> None:
    journal = MemoryJournal()
    await journal.open()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW)
    raw = _oru(control_id="MJ1")
    first = await intake.handle(raw, "peer")
    assert segments(first)["MSA"][1] == "AA"
    assert await intake.handle(raw, "peer") == first
    conflict = segments(await intake.handle(_oru(control_id="MJ1", flags=Flags(masque_ps=True)), "peer"))
    assert conflict["MSA"][1] == "AR" and conflict["ERR"][3].startswith("205^")
    bad = _oru(control_id="MJ2", with_sender_prt=False)
    assert segments(await intake.handle(bad, "peer"))["MSA"][1] == "AE"
    assert segments(await intake.handle(_oru(control_id="MJ2"), "peer"))["MSA"][1] == "AA"
    counts = await journal.counts()
    assert counts[State.ACCEPTED] == 2 and counts[State.REJECTED] == 1
    await journal.close()


async def test_adt_without_zfa_refused_by_default_accepted_when_configured() -> None:
    import random
    from datetime import UTC, datetime

    from passerelle.mappings.samples.messages import build_adt_consent, synthetic_patient

    adt = build_adt_consent(
        now=datetime(2026, 1, 1, tzinfo=UTC), control_id="A8", patient=synthetic_patient(random.Random(3))
    )
    without_zfa = b"\r".join(s for s in adt.split(b"\r") if not s.startswith(b"ZFA"))
    refused, _ = make(FakeJournal())
    seg = segments(await refused.handle(without_zfa, "peer"))
    assert seg["MSA"][1] == "AR" and seg["ERR"][3].split("^")[0] == "201"
    journal = FakeJournal()
    accepting, _ = make(journal, accept_adt_without_zfa=True)
    assert segments(await accepting.handle(without_zfa, "peer"))["MSA"][1] == "AA"
    assert [r.kind for r in journal.rows] == ["adt"]
