"""HL7v2 acknowledgements: the technical ACK and the business ZAM, built from values.

Which code answers which error is decided by the connector's one reply table
(``passerelle/connector/intake/replies.py``, published in docs/ack-contract.md); this module only
writes the segments. Texts it writes (MSA-3, ERR-7) are given by the caller, already PHI-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from passerelle.mappings.hl7v2.decode import DEFAULT_DELIMITERS, Delimiters
from passerelle.mappings.hl7v2.header import Header

#: HL7 table 0357 (message error condition codes) texts.
HL7_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
ERR_CODING_SYSTEM = "messageErrorCondition"  # as written by the ANS volet examples (HL7 table 0357)
#: OBX-3 of the business acknowledgement: the DMP's acknowledgement of receipt (volet §3.6).
ZAM_OBSERVATION = ("ACK_RECEPTION_DMP", "Accusé de réception DMP")


@dataclass(frozen=True, slots=True)
class Reply:
    """How one error class is answered."""

    original: str  # MSA-1 in original mode: AE / AR
    enhanced: str  # MSA-1 in enhanced mode (accept level): CR / CE
    err3: str  # HL7 table 0357 code; "" = take the error's own hl7_code
    severity: str  # HL7 table 0516: E / F / W / I


@dataclass(frozen=True, slots=True)
class Refusal:
    """Everything a negative ACK says: the codes, the ERR-3 code, the PHI-free text and ERR-2 location."""

    reply: Reply
    err3: str  # a key of HL7_0357
    text: str
    location: str = ""


def should_reply(header: Header | None, success: bool) -> bool:
    """Enhanced mode MSH-15: AL always, NE never, ER only on error, SU only on success."""
    if header is None or not header.enhanced_mode:
        return True
    mode = header.accept_ack or "AL"
    if mode == "NE":
        return False
    if mode == "ER":
        return not success
    if mode == "SU":
        return success
    return True


def escape(value: str, d: Delimiters) -> str:
    """HL7-escape a text value we write (escape character first)."""
    if not any(ch in value for ch in (d.field, d.component, d.repetition, d.escape, d.subcomponent)):
        return value
    out = value.replace(d.escape, f"{d.escape}E{d.escape}")
    out = out.replace(d.field, f"{d.escape}F{d.escape}")
    out = out.replace(d.component, f"{d.escape}S{d.escape}")
    out = out.replace(d.repetition, f"{d.escape}R{d.escape}")
    return out.replace(d.subcomponent, f"{d.escape}T{d.escape}")


def hl7_timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def _msh(header: Header | None, d: Delimiters, *, message_type: str, control_id: str, now: datetime) -> str:
    fs = d.field
    h = header or Header(delimiters=d)
    fields = [
        "MSH",
        d.encoding_characters,
        h.receiving_application_raw,
        h.receiving_facility_raw,
        h.sending_application_raw,
        h.sending_facility_raw,
        hl7_timestamp(now),
        "",
        message_type,
        escape(control_id, d),
        h.processing_id or "P",
        h.version_raw or "2.5",
        "",
        "",
        "",
        "",
        h.country_raw,
        h.charset_raw,
    ]
    while fields and not fields[-1]:
        fields.pop()
    return fs.join(fields)


def build_ack(
    header: Header | None,
    *,
    now: datetime,
    control_id: str,
    refusal: Refusal | None = None,
) -> str:
    """Technical ACK ``ACK^<event>^ACK`` (volet §3.6) for ``header`` (None: unreadable MSH).

    No refusal: AA (original) / CA (enhanced). With a refusal: its MSA-1 code, MSA-3 and ERR-7 carrying
    its text, ERR-2 its location, ERR-3 its HL7 0357 code. MSA-2 is MSH-10 ("" if unknown).
    """
    d = header.delimiters if header is not None else DEFAULT_DELIMITERS
    enhanced = header is not None and header.enhanced_mode
    event = header.trigger if header is not None else ""
    message_type = f"ACK{d.component}{escape(event, d)}{d.component}ACK" if event else "ACK"
    segments = [_msh(header, d, message_type=message_type, control_id=control_id, now=now)]
    msa2 = escape(header.control_id, d) if header is not None else ""
    fs = d.field
    if refusal is None:
        segments.append(fs.join(("MSA", "CA" if enhanced else "AA", msa2)))
    else:
        reply, code = refusal.reply, refusal.err3
        text = escape(refusal.text, d)
        err2 = _location(refusal.location, d)
        segments.append(fs.join(("MSA", reply.enhanced if enhanced else reply.original, msa2, text)))
        err3 = d.component.join((code, HL7_0357[code], ERR_CODING_SYSTEM))
        segments.append(fs.join(("ERR", "", err2, err3, reply.severity, "", "", text)))
    return "\r".join(segments) + "\r"


def _location(location: str, d: Delimiters) -> str:
    """ERR-2 (ERL): our locations are written ``SEG^seq^field[^rep^comp^sub]``; others are dropped."""
    parts = location.split("^")
    if not parts or len(parts[0]) != 3 or not parts[0].isalnum() or not parts[0].isupper():
        return ""
    return d.component.join(escape(p, d) for p in parts)


def encode_reply(text: str, codec: str) -> bytes:
    """Encode an ACK in the charset of the message it answers (ASCII-safe fallback: UTF-8)."""
    try:
        return text.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return text.encode("utf-8")


def build_business_ack(
    original: Header,
    *,
    now: datetime,
    control_id: str,
    success: bool,
    dmp_error_code: str = "",
    dmp_error_label: str = "",
) -> str:
    """Business acknowledgement ``ZAM^Z01^ZAM_Z01`` (volet §3.6), sent back after the DMP answered.

    OBX-4 = original MSH-10, OBX-5 = Y/N; on failure ERR-3 207 and ERR-5 ``code^label^DMP_ERROR_CODE``.
    The reply goes from us (original receiver) to the original sender, in HL7 v2.6.
    """
    d = original.delimiters
    fs, cs = d.field, d.component
    msh = fs.join(
        [
            "MSH",
            d.encoding_characters,
            original.receiving_application_raw,
            original.receiving_facility_raw,
            original.sending_application_raw,
            original.sending_facility_raw,
            hl7_timestamp(now),
            "",
            cs.join(("ZAM", "Z01", "ZAM_Z01")),
            escape(control_id, d),
            original.processing_id or "P",
            "2.6",
            "",
            "",
            "",
            "",
            original.country_raw or "FRA",
            original.charset_raw or "UNICODE UTF-8",
            "",
            "",
            cs.join(("2.1", "CISIS_CDA_HL7_V2")),
        ]
    )
    evn = fs.join(("EVN", "", hl7_timestamp(now)))
    obx = fs.join(
        (
            "OBX",
            "1",
            "CWE",
            cs.join((ZAM_OBSERVATION[0], escape(ZAM_OBSERVATION[1], d), "AckMetierZAM")),
            escape(original.control_id, d),
            cs.join(("Y" if success else "N", "", "expandedYes-NoIndicator")),
            "",
            "",
            "",
            "",
            "",
            "F",
        )
    )
    segments = [msh, evn, obx]
    if not success:
        err3 = cs.join(("207", HL7_0357["207"], ERR_CODING_SYSTEM))
        err5 = (
            cs.join((escape(dmp_error_code, d), escape(dmp_error_label, d), "DMP_ERROR_CODE")) if dmp_error_code else ""
        )
        segments.append(fs.join(("ERR", "", "", err3, "E", err5)))
    return "\r".join(segments) + "\r"
