"""ACK building: original/enhanced modes, mirroring, ERR, business ZAM ack (the codes come from the
connector's reply table, tested in test_intake_replies.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from passerelle.connector.intake.replies import hl7_refusal
from passerelle.errors import ParseError, QueueUnavailableError, ValidationError
from passerelle.mappings.hl7v2.ack import build_ack, build_business_ack, encode_reply, escape, should_reply
from passerelle.mappings.hl7v2.decode import DEFAULT_DELIMITERS, Delimiters, decode_message, unescape
from passerelle.mappings.hl7v2.errors import TableValueError
from passerelle.mappings.hl7v2.header import Header, read_header, salvage_header

NOW = datetime(2026, 11, 22, 3, 30, 5, tzinfo=UTC)
MSG = (
    "MSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|202106060931||ORU^R01^ORU_R01|015|P|2.5|||||FRA|8859/15|||"
    "2.1^CISIS_CDA_HL7_V2\rPID|||1^^^H&1.2&ISO^PI\r"
)


def header(text: str = MSG) -> Header:
    return read_header(decode_message(text.encode("latin-1")))


def parse(ack: str) -> dict[str, list[str]]:
    return {line[:3]: line.split("|") for line in ack.split("\r") if line}


def test_positive_ack_mirrors_msh_like_the_ans_example() -> None:
    ack = build_ack(header(), now=NOW, control_id="016")
    # ANS example: MSH|^~\&|PFI-X|Organisation-X|SIL-Y|labo|202106060931||ACK^R01^ACK|016|P|2.5|||||FRA|8859/15
    assert ack.split("\r")[0] == (
        "MSH|^~\\&|PFI-X|Organisation-X|SIL-Y|labo|20261122033005||ACK^R01^ACK|016|P|2.5|||||FRA|8859/15"
    )
    assert ack.split("\r")[1] == "MSA|AA|015"
    assert ack.endswith("\r")


def test_version_with_components_is_mirrored() -> None:
    h = header(MSG.replace("|2.5|", "|2.5^FRA^2.11|").replace("ORU^R01^ORU_R01", "ADT^A01^ADT_A01"))
    seg = parse(build_ack(h, now=NOW, control_id="1"))
    assert seg["MSH"][11] == "2.5^FRA^2.11"
    assert seg["MSH"][8] == "ACK^A01^ACK"


def test_negative_ack_has_msa3_err2_err3_err4_err7() -> None:
    error = TableValueError("OBX-11 must be F for this action", location="OBX^1^11")
    seg = parse(build_ack(header(), now=NOW, control_id="9", refusal=hl7_refusal(error)))
    assert seg["MSA"] == ["MSA", "AE", "015", "OBX-11 must be F for this action"]
    assert seg["ERR"][2] == "OBX^1^11"
    assert seg["ERR"][3] == "103^Table value not found^messageErrorCondition"
    assert seg["ERR"][4] == "E"
    assert seg["ERR"][7] == "OBX-11 must be F for this action"


def test_foreign_exception_text_is_never_sent() -> None:
    ack = build_ack(header(), now=NOW, control_id="9", refusal=hl7_refusal(RuntimeError("password=hunter2 PAT-TROIS")))
    assert "hunter2" not in ack and "PAT-TROIS" not in ack
    assert parse(ack)["MSA"][1] == "AR"


def test_texts_are_escaped_with_the_message_delimiters() -> None:
    error = ValidationError("a|b^c~d\\e&f", location="PID^1^3")
    seg = parse(build_ack(header(), now=NOW, control_id="9", refusal=hl7_refusal(error)))
    assert unescape(seg["MSA"][3], DEFAULT_DELIMITERS) == "a|b^c~d\\e&f"


def test_enhanced_mode_uses_accept_codes() -> None:
    h = header(MSG.replace("|2.5|||||FRA|", "|2.5|||AL|NE|FRA|"))
    assert h.enhanced_mode
    assert parse(build_ack(h, now=NOW, control_id="1"))["MSA"][1] == "CA"
    assert (
        parse(build_ack(h, now=NOW, control_id="1", refusal=hl7_refusal(QueueUnavailableError("x"))))["MSA"][1] == "CE"
    )
    assert parse(build_ack(h, now=NOW, control_id="1", refusal=hl7_refusal(ParseError("x"))))["MSA"][1] == "CR"


@pytest.mark.parametrize(
    ("mode", "on_success", "on_error"),
    [("AL", True, True), ("NE", False, False), ("ER", False, True), ("SU", True, False), ("", True, True)],
)
def test_should_reply(mode: str, on_success: bool, on_error: bool) -> None:
    h = header(MSG.replace("|2.5|||||FRA|", f"|2.5|||{mode}|AL|FRA|"))
    assert should_reply(h, True) is on_success
    assert should_reply(h, False) is on_error


def test_original_mode_always_replies() -> None:
    assert should_reply(header(), True) and should_reply(header(), False) and should_reply(None, False)


def test_unreadable_header_gives_empty_msa2_and_default_delimiters() -> None:
    ack = build_ack(None, now=NOW, control_id="7", refusal=hl7_refusal(ParseError("no MSH", reason="no_msh")))
    seg = parse(ack)
    assert seg["MSH"][1] == "^~\\&" and seg["MSH"][8] == "ACK"
    assert seg["MSA"][1:3] == ["AE", ""]
    assert seg["ERR"][3].startswith("100^")


def test_ack_uses_the_senders_delimiters() -> None:
    text = "MSH#$*!@#APP#FAC#R#F#2026##ORU$R01#ID1#P#2.5\rPID###1\r"
    h = read_header(decode_message(text.encode()))
    ack = build_ack(h, now=NOW, control_id="Z", refusal=hl7_refusal(ValidationError("x", location="PID^1^3")))
    assert ack.startswith("MSH#$*!@#R#F#APP#FAC#")
    assert "ERR##PID$1$3#" in ack


def test_salvaged_header_from_undecodable_bytes() -> None:
    raw = MSG.replace("8859/15", "UNICODE UTF-8").encode() + b"PID|||\xff\xfe\r"
    h = salvage_header(raw)
    assert h is not None and h.control_id == "015" and h.trigger == "R01"
    assert salvage_header(b"garbage") is None
    assert salvage_header("MSH|^\u02dc\\&|A|B|C|D|2||ORU^R01|X|P|2.5\r".encode()) is not None


def test_escape_round_trip() -> None:
    d = Delimiters()
    for text in ["plain", "a|b", "\\F\\", "^~\\&|"]:
        assert unescape(escape(text, d), d) == text


def test_encode_reply_in_the_message_charset() -> None:
    assert encode_reply("é", "latin-1") == b"\xe9"
    assert encode_reply("€", "latin-1") == "€".encode()


def test_business_ack_success_and_failure_like_the_ans_example() -> None:
    h = header()
    ok = parse(build_business_ack(h, now=NOW, control_id="017", success=True))
    assert ok["MSH"][8] == "ZAM^Z01^ZAM_Z01" and ok["MSH"][11] == "2.6"
    assert ok["MSH"][2:6] == ["PFI-X", "Organisation-X", "SIL-Y", "labo"]
    assert ok["OBX"][3] == "ACK_RECEPTION_DMP^Accusé de réception DMP^AckMetierZAM"
    assert ok["OBX"][4] == "015"
    assert ok["OBX"][5] == "Y^^expandedYes-NoIndicator"
    assert ok["OBX"][11] == "F"
    assert "ERR" not in ok
    ko = parse(
        build_business_ack(
            h, now=NOW, control_id="018", success=False, dmp_error_code="DMPClosed", dmp_error_label="DMP fermé"
        )
    )
    assert ko["OBX"][5].startswith("N^")
    assert ko["ERR"][3] == "207^Application internal error^messageErrorCondition"
    assert ko["ERR"][5] == "DMPClosed^DMP fermé^DMP_ERROR_CODE"
    # and it is itself a readable HL7 message
    decoded = decode_message(build_business_ack(h, now=NOW, control_id="018", success=False).encode())
    assert read_header(decoded).message_code == "ZAM"
