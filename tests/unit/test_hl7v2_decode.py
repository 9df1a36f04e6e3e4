"""Decoding: separators, MSH-1/MSH-2, charsets and their traps, escapes, errors from the tree."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest

from passerelle.errors import EncodingError, ParseError, UnsupportedMessageError
from passerelle.mappings.hl7v2.decode import (
    Delimiters,
    UnsupportedCharsetError,
    decode_message,
    read_msh18,
    split,
    unescape,
)
from passerelle.mappings.samples.messages import generate_samples

NAMES = "Hélène Françoise Zoé Lætitia Chloë Œdipe cœur sœur €"


def msg(charset: str = "UNICODE UTF-8", pid_name: str = "DOE^JOHN", sep: str = "\r", enc: str = "^~\\&") -> str:
    return (
        sep.join(
            [
                f"MSH|{enc}|APP|FAC|RCV|RFAC|20260101120000||ORU^R01^ORU_R01|MSG1|P|2.5|||||FRA|{charset}",
                f"PID|||123^^^HOSP&1.2.3&ISO^PI||{pid_name}",
            ]
        )
        + sep
    )


def pid_family(raw: bytes, **kwargs: object) -> str:
    m = decode_message(raw, **kwargs)  # type: ignore[arg-type]
    return m.value(m.first("PID"), 5)


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_separators_are_normalised(sep: str) -> None:
    m = decode_message(msg(sep=sep).encode())
    assert [s.name for s in m.segments] == ["MSH", "PID"]
    assert "\n" not in m.text
    assert m.value(m.msh, 18) == "UNICODE UTF-8"


def test_leading_newlines_trailing_blank_lines_and_bom() -> None:
    raw = b"\xef\xbb\xbf\r\n" + msg().encode() + b"\r\n\r\n"
    m = decode_message(raw)
    assert [s.name for s in m.segments] == ["MSH", "PID"]
    assert "utf8_bom" in m.warnings
    assert m.raw == raw


def test_msh_fields_are_numbered_like_the_standard() -> None:
    m = decode_message(msg().encode())
    assert m.value(m.msh, 1) == "|"
    assert m.value(m.msh, 2) == "^~\\&"
    assert m.value(m.msh, 3) == "APP"
    assert m.value(m.msh, 9, 2) == "R01"
    assert m.value(m.msh, 10) == "MSG1"


@pytest.mark.parametrize(
    ("charset", "codec"), [("UNICODE UTF-8", "utf-8"), ("8859/15", "iso8859-15"), ("8859/1", "latin-1")]
)
def test_declared_charsets_round_trip(charset: str, codec: str) -> None:
    name = "Hélène Françoise Zoé Chloë" + (" Œdipe cœur €" if codec != "latin-1" else "")
    raw = msg(charset, pid_name=name).encode(codec)
    assert pid_family(raw) == name


def test_utf8_read_as_declared_not_guessed() -> None:
    # UTF-8 bytes declared as 8859/15: decoded as declared (mojibake is the sender's bug, visible)
    raw = msg("8859/15", pid_name="é").encode("utf-8")
    assert pid_family(raw) == "Ã©"


def test_ascii_default_rejects_non_ascii_without_fallback() -> None:
    raw = msg("", pid_name="Zoé").encode("utf-8")
    with pytest.raises(EncodingError):
        decode_message(raw)
    assert pid_family(raw, fallback_charset="UNICODE UTF-8") == "Zoé"
    assert pid_family(msg("", pid_name="Zoé").encode("latin-1"), fallback_charset="8859/1") == "Zoé"


def test_invalid_utf8_is_an_encoding_error_never_replacement_char() -> None:
    raw = msg(pid_name="X").encode().replace(b"X", b"\xc3\x28")
    with pytest.raises(EncodingError) as exc:
        decode_message(raw)
    assert exc.value.hl7_code == "102"
    assert "offset" in exc.value.message


def test_cp1252_trap_rejected_by_default() -> None:
    raw = msg("8859/1", pid_name=NAMES).encode("cp1252")
    with pytest.raises(EncodingError) as exc:
        decode_message(raw)
    assert "Windows-1252" in exc.value.message


def test_cp1252_trap_decoded_when_allowed_and_counted() -> None:
    raw = msg("8859/1", pid_name=NAMES).encode("cp1252")
    m = decode_message(raw, allow_cp1252=True)
    assert m.value(m.first("PID"), 5) == NAMES
    assert m.codec == "cp1252"
    assert "cp1252_bytes=4" in m.warnings  # œ Œ œ € -> 0x9C 0x8C 0x9C 0x80


def test_cp1252_undefined_bytes_still_rejected() -> None:
    raw = msg("8859/1", pid_name="X").encode().replace(b"X", b"\x81")
    with pytest.raises(EncodingError):
        decode_message(raw, allow_cp1252=True)


@pytest.mark.parametrize("charset", ["UNICODE UTF-16", "UNICODE UTF-32", "UNICODE", "LATIN1"])
def test_unsupported_charsets(charset: str) -> None:
    with pytest.raises(UnsupportedCharsetError) as exc:
        decode_message(msg(charset).encode())
    assert exc.value.location == "MSH^1^18"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_bytes_are_unsupported(codec: str) -> None:
    with pytest.raises(UnsupportedCharsetError):
        decode_message(msg().encode(codec))


@pytest.mark.parametrize(
    ("before", "after", "location", "label"),
    [
        ("DOE^JOHN", "DO\x00E^JOHN", "PID^1^5", "PID-5"),  # NUL in a field
        ("DOE^JOHN", "DOE^JO\x0bHN", "PID^1^5", "PID-5"),  # VT inside the message (the MLLP start block)
        ("DOE^JOHN", "DOE\x1c^JOHN", "PID^1^5", "PID-5"),  # FS inside a segment (the MLLP end block)
        ("|APP|", "|A\x08PP|", "MSH^1^3", "MSH-3"),  # MSH fields are numbered from MSH-1, the separator
        ("^~\\&", "^~\x01&", "MSH^1^2", "MSH-2"),  # in the encoding characters
        ("PID|", "P\x02D|", "segment 2", "segment 2"),  # in a segment identifier: no field to name
    ],
)
def test_a_control_byte_is_named_with_its_offset_and_location(
    before: str, after: str, location: str, label: str
) -> None:
    """B-HL7-19: the byte, its offset in the payload as received, its segment and field; no content."""
    raw = b"\r\n" + msg().replace(before, after, 1).encode()  # leading newlines count in the offset
    offset = next(i for i, b in enumerate(raw) if b < 0x09 or b in (0x0B, 0x0C) or 0x0E <= b < 0x20)
    with pytest.raises(EncodingError) as exc:
        decode_message(raw)
    assert exc.value.location == location
    assert exc.value.message == f"control character 0x{raw[offset]:02X} at byte offset {offset} ({label})"
    assert "DOE" not in exc.value.message and "JOHN" not in exc.value.message


def test_a_control_byte_in_a_repeated_segment_names_its_occurrence() -> None:
    raw = (msg() + "OBX|1|TX|||a\rOBX|2|TX|||b\x7f\r").encode()
    with pytest.raises(EncodingError) as exc:
        decode_message(raw)
    offset = raw.index(b"\x7f")
    assert exc.value.location == "OBX^2^5"
    assert exc.value.message == f"control character 0x7F at byte offset {offset} (OBX-5)"


def test_msh18_read_from_raw_bytes_with_custom_delimiters() -> None:
    raw = msg(enc="$*#@").replace("|", "!").encode()
    assert read_msh18(raw) == "UNICODE UTF-8"


def test_custom_encoding_characters() -> None:
    text = "MSH#$*!@#APP#FAC#R#F#2026##ORU$R01#ID1#P#2.5\rPID###1$$$A@1.2@ISO$PI*2$$$B@1.3@ISO$PI##X!F!Y$Z\r"
    m = decode_message(text.encode())
    assert m.delimiters == Delimiters("#", "$", "*", "!", "@")
    pid = m.first("PID")
    assert m.value(pid, 3, 4, 2) == "1.2"
    assert m.value(pid, 3, 1, rep=2) == "2"
    assert m.value(pid, 5) == "X#Y"


def test_small_tilde_in_msh2_is_read_as_tilde() -> None:
    raw = msg(enc="^\u02dc\\&", pid_name="A^B").replace("PI||", "PI\u02dc456^^^H&1.9&ISO^PI||").encode()
    m = decode_message(raw)
    assert m.delimiters.repetition == "~"
    assert "msh2_small_tilde" in m.warnings
    assert m.value(m.first("PID"), 3, 1, rep=2) == "456"


@pytest.mark.parametrize(
    "enc",
    ["^~\\", "^~\\&&", "^^\\&", "^~|&", "a~\\&", "^~\\&#!"],
)
def test_bad_encoding_characters_are_parse_errors(enc: str) -> None:
    with pytest.raises(ParseError) as exc:
        decode_message(msg(enc=enc).encode())
    assert exc.value.location.startswith("MSH^1^")


def test_v27_truncation_character_accepted() -> None:
    m = decode_message(msg(enc="^~\\&#").encode())
    assert m.delimiters.subcomponent == "&"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", ParseError),
        (b"MSH", ParseError),
        (b"PID|||1\r", ParseError),
        (b"<?xml version='1.0'?><a/>", ParseError),
        (b"FHS|^~\\&|\rBHS|^~\\&|\r", UnsupportedMessageError),
        (b"MSH|^~\\&|A\rpid|||1\r", ParseError),
        (b"MSH|^~\\&|A\rPIDX|1\r", ParseError),
        (b"MSH|^~\\&|A\rMSH|^~\\&|B\r", ParseError),
        (b"MSHH0\r", ParseError),
        (b"MSH|^\x01\\0|x\r", EncodingError),
        (b"MSH|^~\\&|A\x00B|\r", EncodingError),
    ],
)
def test_malformed_inputs_raise_from_the_tree(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_message(payload)


def test_segment_with_id_only_is_kept() -> None:
    m = decode_message(msg().encode() + b"PV1\rZZZ|1\r")
    assert [s.name for s in m.segments] == ["MSH", "PID", "PV1", "ZZZ"]
    assert m.value(m.first("PV1"), 2) == ""


D = Delimiters()


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d\\E\\e", "a^b&c~d\\e"),
        ("line\\X0D\\next", "line\rnext"),
        ("\\X4869\\", "Hi"),
        ("\\XC3A9\\", "é"),
        ("odd\\X0\\x", "odd\\X0\\x"),
        ("bad\\XZZ\\x", "bad\\XZZ\\x"),
        ("unterminated\\X41", "unterminated\\X41"),
        ("\\.br\\", "\\.br\\"),
        ("\\H\\bold\\N\\", "\\H\\bold\\N\\"),
        ("\\", "\\"),
        ("no escapes", "no escapes"),
    ],
)
def test_unescape(escaped: str, plain: str) -> None:
    codec = "utf-8"
    assert unescape(escaped, D, codec) == plain


def test_malformed_escapes_warn() -> None:
    warnings: list[str] = []
    unescape("x\\Q\\y\\", D, "ascii", warnings)
    assert warnings == ["escape_unknown", "escape_unterminated"]


def test_escaped_carriage_return_does_not_create_a_segment() -> None:
    m = decode_message(msg(pid_name="A\\X0D\\PID|||evil").encode())
    assert [s.name for s in m.segments] == ["MSH", "PID"]
    assert m.value(m.first("PID"), 5) == "A\rPID"


def test_escapes_are_undone_after_splitting() -> None:
    m = decode_message(msg(pid_name="A\\S\\B^C").encode())
    pid = m.first("PID")
    assert m.value(pid, 5, 1) == "A^B"
    assert m.value(pid, 5, 2) == "C"


@pytest.mark.parametrize("value", ["", "a", "a|b||c", "|" * 5000, ("x" * 3000 + "|") * 3])
def test_split_matches_str_split(value: str) -> None:
    assert split(value, "|") == value.split("|")


def test_absent_fields_components_and_repetitions_are_empty() -> None:
    m = decode_message(msg().encode())
    pid = m.first("PID")
    assert m.value(pid, 99) == ""
    assert m.value(pid, 3, 9) == ""
    assert m.value(pid, 3, 4, 9) == ""
    assert m.value(pid, 3, rep=2) == ""
    assert m.value(None, 1) == ""
    assert m.value(m.first("OBX"), 1) == ""


def test_fields_match_python_hl7_on_the_corpus(corpus_dir: Path) -> None:
    """Differential test: our splitter and python-hl7 agree on every field of every ANS example."""
    files = sorted(p for p in (corpus_dir / "hl7v2").rglob("*") if p.suffix in {".hl7", ".er7"})
    texts = [decode_message(p.read_bytes()).text for p in files]
    texts += [decode_message(s.raw).text for s in generate_samples(3, 1, datetime(2026, 1, 1, tzinfo=UTC))]
    assert len(texts) > 50
    for text in texts:
        ours = decode_message(text.encode("utf-8"), fallback_charset="UNICODE UTF-8")
        theirs = hl7.parse(text)
        assert len(theirs) == len(ours.segments)
        for their_seg, our_seg in zip(theirs, ours.segments, strict=True):
            assert str(their_seg[0]) == our_seg.name
            for n in range(3 if our_seg.name == "MSH" else 1, len(our_seg.fields)):
                assert str(their_seg[n]) == our_seg.fields[n], (our_seg.name, n)


def test_segment_count_is_capped() -> None:
    raw = msg().encode() + b"ZZZ|\r" * 300
    assert len(decode_message(raw, max_segments=1000).segments) == 302
    with pytest.raises(ParseError) as exc:
        decode_message(raw + b"ZZZ|\r" * 1000, max_segments=1000)
    assert exc.value.reason == "too_many_segments"


def test_hostile_repetitions_stay_cheap() -> None:
    from passerelle.mappings.hl7v2.patient import extract_ids

    raw = msg(pid_name="A").replace("PI||", "PI" + "~" * 2_000_000 + "||").encode()
    m = decode_message(raw)
    pid = m.first("PID")
    assert m.value(pid, 3) == "123"
    assert m.value(pid, 3, rep=3) == ""
    assert extract_ids(m, pid, test_environment=False).ipp == "123"
