"""Property-based fuzzing of the decoder, the ACK path and the intake handler.

Property: any input gives either a result or an exception from the declared tree
(:class:`PasserelleError`), and the intake always answers with an ACK; hypothesis deadlines bound
the time per input (no timing asserts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
from passerelle.connector.intake.replies import hl7_refusal
from passerelle.errors import PasserelleError
from passerelle.mappings.hl7v2.ack import build_ack
from passerelle.mappings.hl7v2.decode import Delimiters, decode_message, unescape
from passerelle.mappings.hl7v2.header import read_header, salvage_header
from passerelle.mappings.hl7v2.volet import classify
from passerelle.mappings.samples.messages import generate_samples
from passerelle.queue.model import AppendResult, Inbound

NOW = datetime(2026, 11, 22, tzinfo=UTC)
SAMPLE = generate_samples(1, 99, NOW)[0].raw
# HL7_FUZZ_EXAMPLES=20000 for a longer (nightly) run; the default keeps the suite fast.
FUZZ = settings(
    deadline=timedelta(milliseconds=750),
    max_examples=int(os.environ.get("HL7_FUZZ_EXAMPLES", "250")),
    suppress_health_check=[HealthCheck.too_slow],
)

# Inputs reported against other parsers (docs/bad-input.md B-HL7-3, nHapi issue 196).
NASTY = [
    b"",
    b"MSH",
    b"MSH|",
    b"MSHH0\r",
    b"MSH|^\x01\\0|x",
    b"MSH|^|||||||^A|||2.2\r^AA",
    b"MSH|^~\\&|A|B|C|D|E||ADT^A01|1|P|2.5\r" + b"OBX|" * 20000,
    b"MSH|^~\\&|A|B|C|D|E||ORU^R01|1|P|2.5\rPID|||" + b"~" * 200_000,
    b"\xff\xfe" + "MSH|^~\\&|".encode("utf-16-le"),
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
    b'{"resourceType": "Bundle"}',
    b"FHS|^~\\&|\rBHS|^~\\&|\r",
]


def pipeline(raw: bytes) -> str:
    """Decode -> header -> classify -> ACK; errors from the tree become a negative ACK."""
    header = None
    try:
        msg = decode_message(raw, fallback_charset="8859/15")
        header = read_header(msg)
        classify(msg, header, test_environment=True, accepted_processing_ids={"P"})
    except PasserelleError as exc:
        return build_ack(header or salvage_header(raw), now=NOW, control_id="F", refusal=hl7_refusal(exc))
    return build_ack(header, now=NOW, control_id="F")


def mutate(data: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, length, insert in edits:
        pos %= len(out) + 1
        out[pos : pos + length] = insert
    return bytes(out)


HL7ISH = st.binary(max_size=64) | st.sampled_from(
    [b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\\X", b"\\X0D\\", b"MSH|", b"\xcb\x9c", b"\x9c", b"\x00", b"="]
)
EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), HL7ISH), max_size=6)


@FUZZ
@given(st.binary(max_size=2048))
def test_decoder_on_random_bytes(raw: bytes) -> None:
    with contextlib.suppress(PasserelleError):
        decode_message(raw)


@FUZZ
@given(st.binary(max_size=512).map(lambda b: b"MSH|^~\\&|" + b))
def test_pipeline_on_random_bytes_after_msh(raw: bytes) -> None:
    assert pipeline(raw).startswith("MSH")


@FUZZ
@given(EDITS)
@example([])
def test_pipeline_on_mutated_valid_messages(edits: list[tuple[int, int, bytes]]) -> None:
    ack = pipeline(mutate(SAMPLE, edits))
    assert f"\rMSA{ack[3]}" in ack  # answered with the delimiters the message declared


@FUZZ
@given(st.sampled_from(NASTY))
def test_known_nasty_inputs(raw: bytes) -> None:
    assert pipeline(raw).startswith("MSH")


@FUZZ
@given(
    st.text(alphabet=st.sampled_from("!#$%*@^~\\&|"), min_size=4, max_size=5),
    st.text(max_size=200),
)
def test_custom_encoding_characters(encoding: str, body: str) -> None:
    raw = f"MSH|{encoding}|A|B|C|D|2026||ORU^R01|1|P|2.5\rPID|||{body}\r".encode()
    try:
        msg = decode_message(raw)
    except PasserelleError:
        return
    assert msg.delimiters.field == "|"


@FUZZ
@given(st.text(max_size=300))
def test_unescape_never_raises(value: str) -> None:
    unescape(value, Delimiters(), "utf-8", [])


class Journal:
    async def append(self, items: Sequence[Inbound]) -> list[AppendResult]:
        return [AppendResult(i + 1) for i in range(len(items))]


INTAKE = Hl7Intake(Journal().append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW)


@FUZZ
@given(st.one_of(st.binary(max_size=1024), EDITS.map(lambda e: mutate(SAMPLE, e)), st.sampled_from(NASTY)))
def test_intake_always_answers(raw: bytes) -> None:
    ack = asyncio.run(INTAKE.handle(raw, "fuzz"))
    assert ack is None or (ack.startswith(b"MSH") and b"\rMSA" + ack[3:4] in ack)
