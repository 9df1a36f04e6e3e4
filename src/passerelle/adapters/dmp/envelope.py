"""SOAP 1.2 + WS-Addressing envelopes, MTOM/XOP packaging, and the reading of answers.

Requests: ``wsa:MessageID`` (``urn:uuid:``), ``wsa:To`` (the endpoint), ``wsa:ReplyTo`` anonymous and
``wsa:Action`` (both ``mustUnderstand``), then ``wsse:Security`` holding the VIHF alone. ITI-41 goes as
``multipart/related; type="application/xop+xml"`` (CRLF framing, binary parts, the envelope first, one part
per document with its exact bytes, ``Content-Length`` counted in bytes by the HTTP client); the other
transactions as plain ``application/soap+xml``.

Answers are read whatever their packaging: plain SOAP, or ``multipart/related`` (the DMP's CXF server
wraps even a bare RegistryResponse in XOP) parsed with the standard library's email parser; a capture
whose part headers are damaged is still read by locating the envelope. A SOAP 1.2 fault gives its code
(``Sender``/``Receiver``), its innermost subcode (the DMP's own code) and reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser

from lxml import etree

from passerelle.mappings.xds.submission import Part

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
SOAP_XML = "application/soap+xml"
XOP_XML = "application/xop+xml"
ROOT_CONTENT_ID = "root.message@passerelle"
CRLF = b"\r\n"


class MalformedAnswerError(ValueError):
    """The answer is not a readable SOAP 1.2 envelope."""


def message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def build_envelope(action: str, to: str, body: etree._Element, vihf: etree._Element | None, msg_id: str) -> bytes:
    """The SOAP 1.2 envelope (UTF-8 bytes, XML declaration) around ``body``."""
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "wsa": WSA})
    header = etree.SubElement(envelope, f"{{{SOAP}}}Header")
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = msg_id
    etree.SubElement(header, f"{{{WSA}}}To").text = to
    reply = etree.SubElement(header, f"{{{WSA}}}ReplyTo", {f"{{{SOAP}}}mustUnderstand": "true"})
    etree.SubElement(reply, f"{{{WSA}}}Address").text = ANONYMOUS
    etree.SubElement(header, f"{{{WSA}}}Action", {f"{{{SOAP}}}mustUnderstand": "true"}).text = action
    if vihf is not None:
        security = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        security.append(vihf)
    etree.SubElement(envelope, f"{{{SOAP}}}Body").append(body)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def plain_content_type(action: str) -> str:
    return f'{SOAP_XML}; charset=UTF-8; action="{action}"'


def mtom_package(envelope: bytes, parts: Sequence[Part], action: str, boundary: str) -> tuple[str, bytes]:
    """``(Content-Type header, body)`` of an MTOM/XOP request: the envelope, then one binary part per
    document (its exact bytes, its own Content-ID). ``boundary`` must not occur in any part."""
    for data in (envelope, *(p.content for p in parts)):
        if f"--{boundary}".encode("ascii") in data:
            raise ValueError("MIME boundary found inside a part")
    chunks = [
        _part_head(boundary, f'{XOP_XML}; charset=UTF-8; type="{SOAP_XML}"', ROOT_CONTENT_ID),
        envelope,
        CRLF,
    ]
    for part in parts:
        chunks += [_part_head(boundary, part.mime_type, part.content_id), part.content, CRLF]
    chunks.append(f"--{boundary}--".encode("ascii") + CRLF)
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="{XOP_XML}"; start="<{ROOT_CONTENT_ID}>"; '
        f'start-info="{SOAP_XML}"; action="{action}"'
    )
    return content_type, b"".join(chunks)


def _part_head(boundary: str, content_type: str, content_id: str) -> bytes:
    lines = [
        f"--{boundary}",
        f"Content-Type: {content_type}",
        "Content-Transfer-Encoding: binary",
        f"Content-ID: <{content_id}>",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


# --- answers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    code: str  # Sender | Receiver | VersionMismatch | MustUnderstand | DataEncodingUnknown
    subcode: str = ""  # the innermost Subcode value's local name (the DMP's code)
    reason: str = ""


@dataclass(frozen=True)
class SoapAnswer:
    envelope: etree._Element
    payload: etree._Element | None  # first element of the Body (None for an empty body)
    fault: Fault | None
    action: str = ""
    relates_to: str = ""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)


def soap_bytes(content_type: str, body: bytes) -> bytes:
    """The envelope bytes of an answer, plain or multipart/related."""
    if not content_type.lower().startswith("multipart/"):
        return body
    message = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    start_param = message.get_param("start")
    start = start_param.strip().strip("<>") if isinstance(start_param, str) else ""
    parts = [p for p in message.iter_parts()] if message.is_multipart() else []
    for part in parts:
        if not start or (part.get("Content-ID") or "").strip().strip("<>") == start:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and b"Envelope" in payload:
                return payload
    return _locate_envelope(body)


_ENVELOPE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Envelope[\s>].*?</(?:[A-Za-z_][\w.-]*:)?Envelope\s*>", re.S)


def _locate_envelope(body: bytes) -> bytes:
    found = _ENVELOPE.search(body)
    if found is None:
        raise MalformedAnswerError("no SOAP envelope in the multipart answer")
    return found.group(0)


def parse_answer(content_type: str, body: bytes) -> SoapAnswer:
    """Read a SOAP 1.2 answer. Raises :class:`MalformedAnswerError`."""
    raw = soap_bytes(content_type, body)
    try:
        envelope = etree.fromstring(raw.strip(), _parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedAnswerError("the answer is not well-formed XML") from exc
    if envelope.tag != f"{{{SOAP}}}Envelope":
        raise MalformedAnswerError("the answer is not a SOAP 1.2 envelope")
    soap_body = envelope.find(f"{{{SOAP}}}Body")
    if soap_body is None:
        raise MalformedAnswerError("the SOAP envelope has no Body")
    payload = next((child for child in soap_body if isinstance(child.tag, str)), None)
    fault = _fault(payload) if payload is not None and payload.tag == f"{{{SOAP}}}Fault" else None
    return SoapAnswer(
        envelope,
        payload,
        fault,
        action=_header(envelope, "Action"),
        relates_to=_header(envelope, "RelatesTo"),
    )


def _header(envelope: etree._Element, name: str) -> str:
    found = envelope.find(f"{{{SOAP}}}Header/{{{WSA}}}{name}")
    return (found.text or "").strip() if found is not None else ""


def _local(value: str) -> str:
    return value.strip().rsplit(":", 1)[-1]


def _fault(fault: etree._Element) -> Fault:
    code = fault.find(f"{{{SOAP}}}Code/{{{SOAP}}}Value")
    subcode = ""
    node = fault.find(f"{{{SOAP}}}Code")
    while node is not None:
        node = node.find(f"{{{SOAP}}}Subcode")
        value = node.find(f"{{{SOAP}}}Value") if node is not None else None
        if value is not None and value.text:
            subcode = _local(value.text)
    reason = fault.find(f"{{{SOAP}}}Reason/{{{SOAP}}}Text")
    return Fault(
        code=_local(code.text or "") if code is not None else "",
        subcode=subcode,
        reason=" ".join((reason.text or "").split())[:200] if reason is not None else "",
    )
