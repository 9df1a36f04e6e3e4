"""From raw frame bytes to a light HL7v2 message view.

This is the ACK path: it must stay cheap (a few string splits, no full parse, no base64 decode).
Rules (docs/charsets.md):

* The character set comes from MSH-18, read from the raw bytes (the MSH segment is ASCII), else
  from the per-sender fallback, else ASCII (HL7 table 0211 default). Decoding is strict: a byte
  sequence invalid in the chosen charset raises :class:`EncodingError`, never U+FFFD.
* ``8859/1`` or ``8859/15`` with bytes 0x80-0x9F (C1 controls, never meant in text) is the
  Windows-1252 trap: decoded as cp1252 only when the sender is allowed to (``allow_cp1252``), with
  a ``cp1252_bytes=N`` warning; otherwise rejected.
* UTF-16/UTF-32 (BOM, NUL bytes or MSH-18) are unsupported (ERR-3 203).
* Segment separators CR, LF and CRLF are accepted and normalised to CR.
* MSH-2 is validated; the U+02DC SMALL TILDE that some ANS examples carry instead of ``~`` is
  read as ``~`` (warning ``msh2_small_tilde``).
* Escape sequences are undone per component after splitting; malformed ones are kept literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from passerelle.errors import EncodingError, ParseError, UnsupportedMessageError

UTF8_BOM = b"\xef\xbb\xbf"
#: Memory bound: a 16 MiB frame of empty segments would otherwise become millions of objects.
MAX_SEGMENTS = 100_000
SMALL_TILDE = "\u02dc"
_SMALL_TILDE_UTF8 = SMALL_TILDE.encode("utf-8")

#: MSH-18 values (HL7 table 0211) -> Python codec.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}
_UNSUPPORTED_CHARSETS = frozenset({"UNICODE", "UNICODE UTF-16", "UNICODE UTF-32"})
#: Charsets where bytes 0x80-0x9F are C1 controls, i.e. most likely Windows-1252 text.
_C1_TRAP_CODECS = frozenset({"latin-1", "iso8859-15"})
# Byte sets checked with bytes.translate (a C loop, ~8x faster than a regex class on 60 KB).
_C1_BYTES = bytes(range(0x80, 0xA0))
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_CONTROL_RE = re.compile(b"[" + re.escape(_CONTROL_BYTES) + b"]")  # the same set, to find the first
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_SEEN_SEGMENT_IDS: set[str] = set()
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def split(value: str, sep: str) -> list[str]:
    """``value.split(sep)`` that stays fast on long values (embedded base64).

    CPython splits on one character with a plain loop (~1 ns/char); ``str.find`` uses memchr. For
    a 60 KB OBX-5 that is the difference between ~60 us and ~3 us per split.
    """
    if len(value) < 2048:
        return value.split(sep)
    out: list[str] = []
    start = 0
    find = value.find
    for _ in range(64):
        pos = find(sep, start)
        if pos == -1:
            out.append(value[start:])
            return out
        out.append(value[start:pos])
        start = pos + 1
    # many separators: the per-character C loop is now the cheaper one (and bounds the Python loop)
    out.extend(value[start:].split(sep))
    return out


class UnsupportedCharsetError(UnsupportedMessageError, reason="unsupported_charset"):
    """UTF-16/UTF-32 or an MSH-18 value we do not decode (ERR-3 203)."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}"


DEFAULT_DELIMITERS = Delimiters()


@dataclass(slots=True)
class Segment:
    """One segment: ``fields[n]`` is SEG-n (for MSH, ``fields[1]`` is MSH-1, the field separator)."""

    name: str
    fields: list[str]

    def field(self, n: int) -> str:
        """Raw (still escaped) text of field ``n``, or "" when absent."""
        return self.fields[n] if 0 <= n < len(self.fields) else ""


@dataclass(slots=True)
class Message:
    """A decoded HL7v2 message: segments split into fields, components split on demand."""

    raw: bytes
    text: str
    codec: str
    charset: str  # MSH-18 as declared ("" when absent)
    delimiters: Delimiters
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)

    # --- access --------------------------------------------------------------------------------

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def repetitions(self, raw_field: str) -> list[str]:
        return split(raw_field, self.delimiters.repetition) if raw_field else []

    def components(self, raw_value: str) -> list[str]:
        return split(raw_value, self.delimiters.component)

    def component(self, raw_value: str, comp: int = 1, sub: int = 1) -> str:
        """Unescaped component ``comp`` (1-based), subcomponent ``sub`` of one repetition."""
        d = self.delimiters
        value = raw_value
        if comp > 1 or d.component in value:
            comps = split(value, d.component)
            if comp > len(comps):
                return ""
            value = comps[comp - 1]
        if sub > 1 or d.subcomponent in value:
            subs = split(value, d.subcomponent)
            if sub > len(subs):
                return ""
            value = subs[sub - 1]
        if d.escape in value:
            return unescape(value, d, self.codec, self.warnings)
        return value

    def value(self, seg: Segment | None, n: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        """Unescaped SEG-n[.rep].comp.sub, "" when absent."""
        if seg is None:
            return ""
        fields = seg.fields
        if n >= len(fields) or n < 0:
            return ""
        raw = fields[n]
        if not raw:
            return ""
        if n <= 2 and seg.name == "MSH":
            return raw
        d = self.delimiters
        if rep == 1:
            cut = raw.find(d.repetition)  # memchr; never splits a huge field for its first repetition
            if cut != -1:
                raw = raw[:cut]
        else:
            reps = raw.split(d.repetition, rep)
            if rep > len(reps):
                return ""
            raw = reps[rep - 1]
        return self.component(raw, comp, sub)

    def unescape(self, value: str) -> str:
        if self.delimiters.escape not in value:
            return value
        return unescape(value, self.delimiters, self.codec, self.warnings)


def unescape(value: str, d: Delimiters, codec: str = "ascii", warnings: list[str] | None = None) -> str:
    """Undo HL7 escape sequences in one leaf value; malformed sequences stay literal (+ warning)."""
    esc = d.escape
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end == -1:
            out.append(value[i:])
            _warn(warnings, "escape_unterminated")
            break
        seq = value[i + 1 : end]
        replacement = _escape_value(seq, d, codec)
        if replacement is None:
            out.append(value[i : end + 1])
            _warn(warnings, "escape_unknown")
        else:
            out.append(replacement)
        i = end + 1
    return "".join(out)


def _escape_value(seq: str, d: Delimiters, codec: str) -> str | None:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}
    if seq in simple:
        return simple[seq]
    if seq[:1] == "X" and _HEX.fullmatch(seq[1:]):
        try:
            return bytes.fromhex(seq[1:]).decode(codec)
        except (UnicodeDecodeError, LookupError):
            return None
    return None


def _warn(warnings: list[str] | None, text: str) -> None:
    if warnings is not None and text not in warnings:
        warnings.append(text)


# --- decoding ---------------------------------------------------------------------------------


def read_msh18(raw: bytes) -> str:
    """MSH-18 (first repetition, first component) read from the raw bytes; "" when absent."""
    end = len(raw)
    for sep in (b"\r", b"\n"):
        pos = raw.find(sep)
        if pos != -1 and pos < end:
            end = pos
    line = raw[:end]
    if len(line) < 4:
        return ""
    fs = line[3:4]
    parts = line.split(fs)
    if len(parts) <= 17:
        return ""
    encoding = parts[1].replace(_SMALL_TILDE_UTF8, b"~")
    rep = encoding[1:2] or b"~"
    comp = encoding[0:1] or b"^"
    value = parts[17].split(rep)[0].split(comp)[0]
    try:
        return value.decode("ascii").strip().upper()
    except UnicodeDecodeError:
        return "?"


def choose_codec(declared: str, fallback: str | None) -> str:
    """Python codec for an MSH-18 value (or the per-sender fallback when MSH-18 is empty)."""
    if not declared:
        if not fallback:
            return "ascii"
        declared = fallback.strip().upper()
        if declared not in CHARSETS:
            # a fallback may be given as a Python codec name ("cp1252", "latin-1")
            return fallback
    if declared in CHARSETS:
        return CHARSETS[declared]
    if declared in _UNSUPPORTED_CHARSETS or "UTF-16" in declared or "UTF-32" in declared:
        raise UnsupportedCharsetError("UTF-16/UTF-32 is not supported", location="MSH^1^18")
    raise UnsupportedCharsetError("unsupported character set in MSH-18", location="MSH^1^18")


def decode_message(
    raw: bytes,
    *,
    fallback_charset: str | None = None,
    allow_cp1252: bool = False,
    max_segments: int = MAX_SEGMENTS,
) -> Message:
    """Decode one HL7v2 message (frame payload without MLLP bytes).

    Raises :class:`ParseError` (no MSH, bad delimiters, bad segment id), :class:`EncodingError`
    (bytes invalid in the charset) or :class:`UnsupportedCharsetError` (UTF-16/32, unknown MSH-18).
    """
    warnings: list[str] = []
    data = _message_bytes(raw, warnings)
    # MSH-2 first, from the bytes (MSH is ASCII), so MSH-18 is read with the right delimiters.
    delims = _delimiters(chr(data[3]), _encoding_characters(data, warnings))
    declared = read_msh18(data)
    codec = _codec(data, declared, fallback_charset, allow_cp1252, warnings)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise EncodingError(f"invalid {declared or codec} byte at offset {exc.start}", location="MSH^1^18") from exc
    except LookupError as exc:
        raise UnsupportedCharsetError("unknown fallback character set", location="MSH^1^18") from exc
    if "msh2_small_tilde" in warnings:
        # the same paste replaced every "~" of the message (PID-11 repetitions in the ANS examples)
        text = text.replace(SMALL_TILDE, "~")
    return _message(raw, text, codec, declared, delims, warnings, max_segments)


def message_from_text(text: str, *, max_segments: int = MAX_SEGMENTS) -> Message:
    """A message already decoded to text (a sample built in code, a row decoded earlier): the same
    delimiter and segment rules as :func:`decode_message`, no charset step."""
    warnings: list[str] = []
    body = text.lstrip("\r\n\t ")
    if not body.startswith("MSH") or len(body) < 8:
        raise ParseError("message does not start with MSH", location="MSH", reason="no_msh")
    end = min((p for p in (body.find("\r"), body.find("\n")) if p != -1), default=len(body))
    encoding = body[4:end].split(body[3], 1)[0] if body[3] in body[4:end] else ""
    if not encoding:
        raise ParseError("MSH-2 encoding characters missing", location="MSH^1^2")
    delims = _delimiters(body[3], encoding.replace(SMALL_TILDE, "~"))
    return _message(text.encode("utf-8"), body, "utf-8", "", delims, warnings, max_segments)


def _message_bytes(raw: bytes, warnings: list[str]) -> bytes:
    """The payload from its MSH on: BOM dropped (warning), UTF-16/32, batches and control bytes refused."""
    data = raw
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
        warnings.append("utf8_bom")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:8]:
        raise UnsupportedCharsetError("UTF-16/UTF-32 is not supported", location="MSH^1^18")
    data = data.lstrip(b"\r\n\t ")
    if not data.startswith(b"MSH"):
        if data[:3] in (b"FHS", b"BHS"):
            raise UnsupportedMessageError("batches are not supported", location="FHS", reason="batch")
        raise ParseError("message does not start with MSH", location="MSH", reason="no_msh")
    if len(data) < 8:
        raise ParseError("MSH segment too short", location="MSH^1^2")
    fs_byte = data[3]
    if fs_byte < 0x21 or fs_byte > 0x7E or chr(fs_byte).isalnum():
        raise ParseError("invalid field separator (MSH-1)", location="MSH^1^1")
    if len(data.translate(None, _CONTROL_BYTES)) != len(data):
        raise control_character(data, len(raw) - len(data))
    return data


def control_character(data: bytes, skipped: int = 0) -> EncodingError:
    """The error naming the first control byte of ``data`` (from its MSH): the byte, its offset in the
    payload as received (``skipped``: the bytes dropped before the MSH) and its segment and field
    (ERR-2 ``SEG^seq^field``; ``segment N`` when it sits in a segment identifier). No content is quoted."""
    found = _CONTROL_RE.search(data)
    at = found.start() if found is not None else 0
    start = max(data.rfind(b"\r", 0, at), data.rfind(b"\n", 0, at)) + 1
    lines = [line for line in _LINE_ENDS.split(data[:start]) if line.strip(b" \t")]
    name, fs = data[start : start + 3], data[3:4]
    fields = data.count(fs, start, at)
    if not _SEGMENT_ID.fullmatch(name.decode("latin-1")) or not fields:
        where, label = f"segment {len(lines) + 1}", f"segment {len(lines) + 1}"
    else:
        seq = 1 + sum(1 for line in lines if line[:3] == name and line[3:4] in (b"", fs))
        field_no = fields + 1 if name == b"MSH" else fields
        where, label = f"{name.decode()}^{seq}^{field_no}", f"{name.decode()}-{field_no}"
    return EncodingError(f"control character 0x{data[at]:02X} at byte offset {skipped + at} ({label})", location=where)


def _encoding_characters(data: bytes, warnings: list[str]) -> str:
    """MSH-2 read from the bytes; the U+02DC small tilde of some ANS examples is read as ``~``."""
    enc_end = data.find(data[3:4], 4)
    if enc_end == -1 or enc_end > _first_line_end_bytes(data):
        raise ParseError("MSH-2 encoding characters missing", location="MSH^1^2")
    encoding_bytes = data[4:enc_end]
    if _SMALL_TILDE_UTF8 in encoding_bytes:
        warnings.append("msh2_small_tilde")
        encoding_bytes = encoding_bytes.replace(_SMALL_TILDE_UTF8, b"~")
    if not encoding_bytes.isascii():
        raise ParseError("invalid MSH-2 encoding character", location="MSH^1^2")
    return encoding_bytes.decode("ascii")


def _codec(data: bytes, declared: str, fallback: str | None, allow_cp1252: bool, warnings: list[str]) -> str:
    """The codec of MSH-18 (or the fallback); Latin-1 text with C1 bytes is the Windows-1252 trap."""
    codec = choose_codec(declared, fallback)
    if codec not in _C1_TRAP_CODECS:
        return codec
    c1 = len(data) - len(data.translate(None, _C1_BYTES))
    if not c1:
        return codec
    if not allow_cp1252:
        raise EncodingError(
            f"{c1} bytes in 0x80-0x9F: Windows-1252 text declared as {declared or codec}", location="MSH^1^18"
        )
    warnings.append(f"cp1252_bytes={c1}")
    return "cp1252"


def _message(
    raw: bytes, text: str, codec: str, declared: str, delims: Delimiters, warnings: list[str], max_segments: int
) -> Message:
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    # a segment takes at least 4 characters, so only long texts can exceed the cap
    if len(text) > 4 * max_segments and text.count("\r") >= max_segments:
        raise ParseError(f"more than {max_segments} segments", location="MSH", reason="too_many_segments")
    segments = [_segment(line, lineno, delims.field) for lineno, line in _lines(text)]
    if any(seg.name == "MSH" for seg in segments[1:]):
        where = next(n for n, seg in enumerate(segments, start=1) if seg.name == "MSH" and n > 1)
        raise ParseError("more than one MSH segment", location=f"segment {where}")
    return Message(
        raw=raw, text=text, codec=codec, charset=declared, delimiters=delims, segments=segments, warnings=warnings
    )


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every non-blank line."""
    return [
        (lineno, line)
        for lineno, line in enumerate(split(text, "\r"), start=1)
        if line and not (line[0] in " \t" and not line.strip())
    ]


def _segment(line: str, lineno: int, fs: str) -> Segment:
    name = line[:3]
    if name not in _SEEN_SEGMENT_IDS:
        if not _SEGMENT_ID.fullmatch(name):
            raise ParseError("invalid segment identifier", location=f"segment {lineno}")
        _SEEN_SEGMENT_IDS.add(name)  # bounded: at most 26*36*36 valid identifiers
    if len(line) > 3 and line[3] != fs:
        raise ParseError("invalid segment identifier", location=f"segment {lineno}")
    parts = split(line, fs)
    if name == "MSH":
        parts.insert(1, fs)
    return Segment(name, parts)


def _first_line_end_bytes(data: bytes) -> int:
    ends = [p for p in (data.find(b"\r"), data.find(b"\n")) if p != -1]
    return min(ends) if ends else len(data)


def _delimiters(fs: str, encoding: str) -> Delimiters:
    # v2.7+ may add a fifth character (truncation); it has no role in splitting.
    if len(encoding) not in (4, 5):
        raise ParseError("MSH-2 must hold 4 encoding characters", location="MSH^1^2")
    chars = fs + encoding
    if len(set(chars)) != len(chars):
        raise ParseError("MSH-2 encoding characters are not distinct", location="MSH^1^2")
    for ch in encoding:
        if not ("\x21" <= ch <= "\x7e") or ch.isalnum():
            raise ParseError("invalid MSH-2 encoding character", location="MSH^1^2")
    return Delimiters(fs, encoding[0], encoding[1], encoding[2], encoding[3])
