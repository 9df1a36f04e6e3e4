"""Every reply echoes MSH-10 in MSA-2 whenever it can be read at all, so that a sender can correlate a
refusal with what it sent (issue 13 item 7): broken MSH-2, bad bytes, unknown charsets, oversize."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from passerelle.connector.intake.hl7 import Hl7Intake, Hl7IntakeSettings
from passerelle.mappings.hl7v2.header import salvage_header
from passerelle.queue.memory import MemoryJournal

NOW = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
BODY = b"|SIL|LABO|GW|GHT|20261122||ORU^R01^ORU_R01|CTRL-42|P|2.5\rPID|1||1^^^H&1.2&ISO^PI\r"


@pytest.mark.parametrize(
    ("raw", "msa1"),
    [
        (b"MSH|^~\\" + BODY, "AE"),  # MSH-2 with three encoding characters
        (b"MSH|^~\\&&" + BODY, "AE"),  # a repeated encoding character
        (b"MSH|^~a&" + BODY, "AE"),  # an alphanumeric encoding character
        (b"MSH|^~\\&" + BODY.replace(b"PID|1", b"PID|1\x01"), "AR"),  # a control character (an encoding error: AR)
        (b"MSH|^~\\&" + BODY.replace(b"|P|2.5", b"|P|2.5|||||FRA|UNICODE UTF-8") + b"NTE|\xff\r", "AR"),  # bad UTF-8
        (b"MSH|^~\\&" + BODY.replace(b"|P|2.5", b"|P|2.5|||||FRA|KLINGON"), "AR"),  # unknown MSH-18
        (b"MSH|^~\\&" + BODY.replace(b"PID|1", b"P1D|1"), "AE"),  # an invalid segment name
    ],
    ids=["msh2-three", "msh2-repeated", "msh2-alnum", "control-char", "bad-utf8", "unknown-charset", "bad-segment"],
)
async def test_refusals_echo_msh10(raw: bytes, msa1: str) -> None:
    journal = MemoryJournal()
    intake = Hl7Intake(journal.append, Hl7IntakeSettings(test_environment=True), clock=lambda: NOW)
    reply = await intake.handle(raw, "peer")
    assert reply is not None
    msa = next(line for line in reply.decode("utf-8").split("\r") if line.startswith("MSA|")).split("|")
    assert (msa[1], msa[2]) == (msa1, "CTRL-42")


async def test_oversize_refusal_echoes_msh10() -> None:
    intake = Hl7Intake(MemoryJournal().append, Hl7IntakeSettings(), clock=lambda: NOW)
    reply = await intake.handle_oversize(b"MSH|^~\\" + BODY.split(b"\r")[0], 50_000_000, "peer")
    assert reply is not None and b"MSA|AE|CTRL-42|" in reply


def test_salvaged_header_keeps_a_usable_reply_alphabet() -> None:
    header = salvage_header(b"MSH|^~\\" + BODY)
    assert header is not None and header.control_id == "CTRL-42"
    assert header.delimiters.encoding_characters == "^~\\&"
    assert salvage_header(b"MSH^^~\\&" + BODY) is not None  # field separator equal to a standard one
    assert salvage_header(b"MSHa^~\\&" + BODY) is None  # no usable field separator: nothing to echo
    assert salvage_header(b"PID|1") is None
