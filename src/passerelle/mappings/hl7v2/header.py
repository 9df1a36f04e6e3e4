"""The MSH fields the ACK path needs, read from a decoded message or, as a last resort, raw bytes."""

from __future__ import annotations

from dataclasses import dataclass

from passerelle.errors import ParseError
from passerelle.mappings.hl7v2.decode import Delimiters, Message, unescape


@dataclass(frozen=True, slots=True)
class Header:
    """MSH values. ``*_raw`` fields keep the sender's escaping, for mirroring into the ACK."""

    delimiters: Delimiters
    sending_application_raw: str = ""
    sending_facility_raw: str = ""
    receiving_application_raw: str = ""
    receiving_facility_raw: str = ""
    sending_application: str = ""  # MSH-3.1
    sending_facility: str = ""  # MSH-4.1
    timestamp: str = ""  # MSH-7
    message_code: str = ""  # MSH-9.1
    trigger: str = ""  # MSH-9.2
    structure: str = ""  # MSH-9.3
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11.1
    version_raw: str = ""  # MSH-12 as sent (e.g. 2.5^FRA^2.11)
    version: str = ""  # MSH-12.1
    accept_ack: str = ""  # MSH-15
    application_ack: str = ""  # MSH-16
    country_raw: str = ""  # MSH-17
    charset_raw: str = ""  # MSH-18 as sent
    profiles: tuple[str, ...] = ()  # MSH-21 profile names (EI.2, else EI.1)

    @property
    def sender(self) -> str:
        """Sender identity used in the journal and dedup key: ``MSH-3.1^MSH-4.1``."""
        return f"{self.sending_application}^{self.sending_facility}"

    @property
    def dedup_key(self) -> str:
        """MSH-3 + MSH-4 + MSH-10; "" when MSH-10 is empty (no dedup possible)."""
        if not self.control_id:
            return ""
        return f"{self.sender}^{self.control_id}"

    @property
    def enhanced_mode(self) -> bool:
        return bool(self.accept_ack or self.application_ack)


def header_from_fields(fields: list[str], d: Delimiters, codec: str = "ascii") -> Header:
    """Build a header from MSH fields (``fields[n]`` = MSH-n)."""

    count = len(fields)
    rep_sep, comp_sep, sub_sep, esc = d.repetition, d.component, d.subcomponent, d.escape

    def f(n: int) -> str:
        return fields[n] if n < count else ""

    def c(raw: str, comp: int = 1) -> str:
        # first repetition, component ``comp``, first subcomponent; most MSH fields are plain
        if not raw:
            return ""
        if rep_sep in raw:
            raw = raw[: raw.index(rep_sep)]
        if comp > 1 or comp_sep in raw:
            comps = raw.split(comp_sep)
            raw = comps[comp - 1] if comp <= len(comps) else ""
        if sub_sep in raw:
            raw = raw[: raw.index(sub_sep)]
        if esc in raw:
            raw = unescape(raw, d, codec)
        return raw.strip()

    msg_type = f(9)
    # MSH-21 EI: "2.1^CISIS_CDA_HL7_V2" -> the namespace (EI.2), else the entity id (EI.1)
    profiles = tuple(c(rep, 2) or c(rep, 1) for rep in f(21).split(d.repetition, 10)[:10] if rep)
    return Header(
        delimiters=d,
        sending_application_raw=f(3),
        sending_facility_raw=f(4),
        receiving_application_raw=f(5),
        receiving_facility_raw=f(6),
        sending_application=c(f(3)),
        sending_facility=c(f(4)),
        timestamp=c(f(7)),
        message_code=c(msg_type, 1).upper(),
        trigger=c(msg_type, 2).upper(),
        structure=c(msg_type, 3).upper(),
        control_id=unescape(f(10), d, codec).strip(),
        processing_id=c(f(11)).upper(),
        version_raw=f(12),
        version=c(f(12)),
        accept_ack=c(f(15)).upper(),
        application_ack=c(f(16)).upper(),
        country_raw=f(17),
        charset_raw=f(18),
        profiles=profiles,
    )


def read_header(msg: Message) -> Header:
    """Header of a decoded message. Raises :class:`ParseError` (101) when MSH-9 or MSH-10 is empty."""
    header = header_from_fields(msg.msh.fields, msg.delimiters, msg.codec)
    if not header.control_id:
        raise ParseError("MSH-10 message control id missing", location="MSH^1^10", reason="required")
    if not header.message_code:
        raise ParseError("MSH-9 message type missing", location="MSH^1^9", reason="required")
    if not header.version:
        raise ParseError("MSH-12 version id missing", location="MSH^1^12", reason="required")
    return header


def salvage_header(raw: bytes) -> Header | None:
    """Best-effort MSH from raw bytes when decoding failed, so the reply can still carry MSA-2.

    The first line is read as Latin-1 (never fails); non-ASCII values are dropped. MSH-2 may be
    unusable (three characters, repeated or alphanumeric ones): the fields are still split on the
    field separator, and the reply uses the standard encoding characters. Returns None only when
    there is no MSH or its field separator is unusable.
    """
    data = raw.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n\t ")
    if not data.startswith(b"MSH"):
        return None
    end = len(data)
    for sep in (b"\r", b"\n"):
        pos = data.find(sep)
        if pos != -1:
            end = min(end, pos)
    line = data[:end].decode("latin-1")
    if len(line) < 9 or not _usable_delimiter(line[3]):
        return None
    fs = line[3]
    parts = line.split(fs)
    d = _salvaged_delimiters(fs, parts[1].replace("\u00cb\u009c", "~"))  # UTF-8 U+02DC read as Latin-1
    fields = [p if p.isascii() and p.isprintable() else "" for p in parts]
    fields.insert(1, fs)
    fields[2] = d.encoding_characters
    return header_from_fields(fields, d)


def _salvaged_delimiters(fs: str, encoding: str) -> Delimiters:
    """The sender's encoding characters when usable, else the standard ones."""
    chars = fs + encoding
    if len(encoding) in (4, 5) and len(set(chars)) == len(chars) and all(map(_usable_delimiter, chars)):
        return Delimiters(fs, encoding[0], encoding[1], encoding[2], encoding[3])
    standard = Delimiters()
    return Delimiters(fs) if fs not in standard.encoding_characters else standard


def _usable_delimiter(ch: str) -> bool:
    return "\x21" <= ch <= "\x7e" and not ch.isalnum()
