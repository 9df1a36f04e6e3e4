"""The HL7v2 intake hands its decoded ORU/MDM messages to the row mapper of the same process (ADR 0026):
used once when it is the row's own reading, never for other bytes, other options or another environment."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.connector.intake import hl7 as hl7_module
from passerelle.connector.intake.binding import Principal
from passerelle.connector.intake.handover import Decoded, DecodedMessages
from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings, SenderOptions
from passerelle.errors import PasserelleError
from passerelle.mappings.document import Document
from passerelle.mappings.hl7v2.decode import Message
from passerelle.mappings.samples.messages import (
    Sender,
    build_adt_consent,
    build_oru,
    root_only_oid,
    synthetic_patient,
)
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.model import Inbound, Query

NOW = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)


def oru(seed: int, control_id: str = "C1", sender: Sender | None = None) -> bytes:
    rng = random.Random(seed)
    patient, document_id, set_id = synthetic_patient(rng), root_only_oid(rng), root_only_oid(rng)
    raw, _ = build_oru(
        now=NOW, control_id=control_id, patient=patient, document_id=document_id, set_id=set_id, sender=sender
    )
    return raw


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The payloads decoded through the sender options (intake's and the mapper's one decoding call)."""
    seen: list[bytes] = []
    real: Callable[..., Message] = hl7_module.decode_message

    def spy(raw: bytes, **kwargs: object) -> Message:
        seen.append(raw)
        return real(raw, **kwargs)

    monkeypatch.setattr(hl7_module, "decode_message", spy)
    return seen


def mapper(journal: MemoryJournal, decoded: DecodedMessages | None, **settings: object) -> RowMapper:
    hl7 = Hl7IntakeSettings(test_environment=True, **settings)  # type: ignore[arg-type]
    return RowMapper(journal, hl7, test_environment=True, clock=lambda: NOW, oid_root="1.2.3", decoded=decoded)


async def accept(raw: bytes, journal: MemoryJournal, decoded: DecodedMessages) -> int:
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW, handover=decoded)
    ack = await intake.handle(raw, "127.0.0.1:5000")
    assert ack is not None and b"|AA|" in ack
    [row] = await journal.find(Query())
    return row.id


async def mapped(m: RowMapper, journal: MemoryJournal, row_id: int) -> Document:
    row = await journal.get(row_id)
    assert row is not None
    doc = await m.map(row)
    assert isinstance(doc, Document)
    return doc


async def test_the_worker_maps_from_the_intake_reading_once(decodes: list[bytes]) -> None:
    journal, decoded = MemoryJournal(), DecodedMessages()
    raw = oru(1)
    row_id = await accept(raw, journal, decoded)
    assert decodes == [raw] and len(decoded) == 1
    doc = await mapped(mapper(journal, decoded), journal, row_id)
    assert decodes == [raw], "the row was decoded again"
    assert (decoded.hits, decoded.misses, len(decoded)) == (1, 0, 0)
    # same document as a mapping from the journal's bytes alone
    assert doc == await mapped(mapper(journal, None), journal, row_id)
    assert len(decodes) == 2
    # the entry was dropped when taken: a second mapping (a retry) decodes again
    assert await mapped(mapper(journal, decoded), journal, row_id) == doc
    assert len(decodes) == 3 and decoded.misses == 1


async def test_other_bytes_under_the_same_row_id_are_decoded_afresh(decodes: list[bytes]) -> None:
    decoded = DecodedMessages()
    row_id = await accept(oru(1), MemoryJournal(), decoded)
    other = MemoryJournal()  # another journal (a restart, another instance) where that id holds other bytes
    raw = oru(2, control_id="C2")
    [result] = await other.append([Inbound(raw=raw, channel="mllp", sender="SIL-SYNTH^LABO-SYNTH", kind="oru")])
    assert result.row_id == row_id
    doc = await mapped(mapper(other, decoded), other, row_id)
    assert decodes[-1] == raw and decoded.misses == 1 and decoded.hits == 0
    assert doc == await mapped(mapper(other, None), other, row_id)
    assert doc.provenance.message_id == "C2"


@pytest.mark.parametrize(
    "settings",
    [{"senders": {"SIL-SYNTH": SenderOptions(allow_cp1252=True)}}, {"fallback_charset": "8859/1"}],
    ids=["sender options", "default charset"],
)
async def test_other_decoding_options_are_not_shared(decodes: list[bytes], settings: dict[str, object]) -> None:
    journal, decoded = MemoryJournal(), DecodedMessages()
    row_id = await accept(oru(1), journal, decoded)
    await mapped(mapper(journal, decoded, **settings), journal, row_id)
    assert len(decodes) == 2 and decoded.misses == 1


async def test_another_environment_is_not_shared(decodes: list[bytes]) -> None:
    journal, decoded = MemoryJournal(), DecodedMessages()
    row_id = await accept(oru(1), journal, decoded)
    row = await journal.get(row_id)
    assert row is not None
    production = RowMapper(
        journal, Hl7IntakeSettings(), test_environment=False, clock=lambda: NOW, oid_root="1", decoded=decoded
    )
    with pytest.raises(PasserelleError) as refused:  # the synthetic INS is a test one: refused in production
        await production.map(row)
    assert refused.value.reason == "identity_not_qualified"
    assert len(decodes) == 2 and decoded.misses == 1


async def test_only_new_document_rows_are_handed_over() -> None:
    journal, decoded = MemoryJournal(), DecodedMessages()
    raw = oru(1)
    await accept(raw, journal, decoded)
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW, handover=decoded)
    decoded.take(1, b"", SenderOptions(), True)  # empty the map
    await intake.handle(raw, "peer")  # a duplicate: no new row
    adt = build_adt_consent(now=NOW, control_id="Z1", patient=synthetic_patient(random.Random(5)), feeding="IO")
    await intake.handle(adt, "peer")  # stored, not a document message
    await intake.handle(b"MSH|^~\\&|A|B|C|D|20261205||ZZZ^Z01|X1|P|2.5\r", "peer")  # refused
    assert len(decoded) == 0


def test_the_map_is_bounded_oldest_first() -> None:
    reading = Hl7IntakeSettings(test_environment=True)
    raw = oru(1)
    msg = reading.decode_incoming(raw)
    entry = Decoded(SenderOptions(), True, msg, None, None)  # type: ignore[arg-type]
    decoded = DecodedMessages(capacity=3, max_bytes=len(raw) * 2)
    for row_id in (1, 2, 3):
        decoded.put(row_id, entry)
    assert len(decoded) == 2  # the byte bound
    assert decoded.take(1, raw, SenderOptions(), True) is None
    assert decoded.take(3, raw, SenderOptions(), True) is entry
    decoded = DecodedMessages(capacity=2)
    for row_id in (1, 2, 3):
        decoded.put(row_id, entry)
    assert [decoded.take(i, raw, SenderOptions(), True) is entry for i in (1, 2, 3)] == [False, True, True]
    small = DecodedMessages(max_bytes=len(raw) - 1)  # a payload larger than the bound is not kept
    small.put(1, entry)
    assert len(small) == 0


async def test_the_reading_is_left_before_intake_awaits_anything_else() -> None:
    """The worker is woken when the append returns: the entry must be there before the intake's next
    await (here the audit of a refused sender in the same batch), or the worker would decode anyway."""
    decoded = DecodedMessages()
    held: list[int] = []

    class Audit:
        async def record(self, **_: object) -> None:
            held.append(len(decoded))

    journal = MemoryJournal()
    settings = Hl7IntakeSettings(test_environment=True)
    intake = Hl7Intake(journal.append, settings, clock=lambda: NOW, audit=Audit(), handover=decoded)  # type: ignore[arg-type]
    intruder = oru(4, control_id="C9", sender=Sender(facility="OTHER"))
    principal = Principal.of("cert:sil", ["SIL-SYNTH^LABO-SYNTH"])
    acks = await intake.handle_batch([(oru(1), "peer"), (intruder, "peer")], principal)
    assert [b"|AA|" in (ack or b"") for ack in acks] == [True, False]
    assert held == [1]
