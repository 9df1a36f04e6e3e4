"""HTTP body of a DMP request: plain SOAP 1.2 or MTOM/XOP ``multipart/related``, checked and split.

Strict by default (W3C MTOM/XOP and IHE ITI TF-2 appendix V, as docs/sandbox.md sums up): CRLF
framing, a ``start`` naming the root part, a root ``application/xop+xml; type="application/soap+xml"``,
binary parts, every ``xop:Include`` resolving to exactly one part and every part referenced once.
``lenient`` accepts what real senders were seen to do: LF-only framing (even indented boundary
lines in a re-formatted capture), base64 parts, whitespace before the XML declaration.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import unquote

from lxml import etree

from passerelle.sandbox.dmp.common import XOP, q, sender

MIME_ERROR = "DMPInvalidMimePackage"


@dataclass
class Packet:
    """The SOAP envelope bytes and the attachments by Content-ID (without angle brackets)."""

    envelope: bytes
    parts: dict[str, bytes] = field(default_factory=dict)
    mtom: bool = False


def content_type(value: str) -> Message:
    message = Message()
    message["content-type"] = value
    return message


def read_body(header: str, body: bytes, *, lenient: bool) -> Packet:
    """Split a request body according to its ``Content-Type`` header; faults name the broken rule."""
    ctype = content_type(header)
    kind = ctype.get_content_type()
    if kind == "application/soap+xml":
        return Packet(envelope=body.lstrip() if lenient else body)
    if kind == "text/xml":
        raise sender(MIME_ERROR, "text/xml is SOAP 1.1; SOAP 1.2 uses application/soap+xml")
    if kind != "multipart/related":
        raise sender(MIME_ERROR, f"unsupported Content-Type {kind}")
    return _read_multipart(ctype, body, lenient)


def _read_multipart(ctype: Message, body: bytes, lenient: bool) -> Packet:
    boundary = ctype.get_param("boundary")
    start = ctype.get_param("start")
    if not isinstance(boundary, str) or not boundary:
        raise sender(MIME_ERROR, "multipart/related without a boundary")
    if ctype.get_param("type") != "application/xop+xml":
        raise sender(MIME_ERROR, 'multipart/related must have type="application/xop+xml"')
    if ctype.get_param("start-info") != "application/soap+xml" and not lenient:
        raise sender(MIME_ERROR, 'multipart/related must have start-info="application/soap+xml"')
    parts = _split(body, boundary.encode("ascii", "replace"), lenient)
    if not parts:
        raise sender(MIME_ERROR, "no MIME part found")
    root_id = _cid(start) if isinstance(start, str) else parts[0][0]
    by_id: dict[str, tuple[Message, bytes]] = {}
    for cid, headers, content in parts:
        if cid in by_id:
            raise sender(MIME_ERROR, "two MIME parts share a Content-ID")
        by_id[cid] = (headers, content)
    if root_id not in by_id:
        raise sender(MIME_ERROR, "start does not name a MIME part")
    root_headers, root = by_id.pop(root_id)
    root_type = content_type(root_headers.get("content-type", ""))
    if root_type.get_content_type() != "application/xop+xml" or root_type.get_param("type") != "application/soap+xml":
        raise sender(MIME_ERROR, 'the root part must be application/xop+xml; type="application/soap+xml"')
    attachments = {cid: _decode(headers, content, lenient) for cid, (headers, content) in by_id.items()}
    envelope = _decode(root_headers, root, lenient)
    return Packet(envelope=envelope.lstrip() if lenient else envelope, parts=attachments, mtom=True)


def _split(body: bytes, boundary: bytes, lenient: bool) -> list[tuple[str, Message, bytes]]:
    delimiter = rb"\r?\n[ \t]*--" if lenient else rb"\r\n--"
    chunks = re.split(delimiter + re.escape(boundary), b"\r\n" + body)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        framing = "LF-only framing needs the lenient mode" if b"\n--" + boundary in body else "no closing delimiter"
        raise sender(MIME_ERROR, f"multipart framing is broken ({framing})")
    result = []
    for chunk in chunks[1:-1]:
        separator = rb"\r?\n[ \t]*\r?\n" if lenient else rb"\r\n\r\n"
        pieces = re.split(separator, chunk, maxsplit=1)
        if len(pieces) != 2 or not re.match(rb"[ \t]*\r?\n" if lenient else rb"[ \t]*\r\n", pieces[0]):
            raise sender(MIME_ERROR, "a MIME part has no header block (CRLF framing expected)")
        headers = _headers(pieces[0], lenient)
        cid = headers.get("content-id")
        if not cid:
            raise sender(MIME_ERROR, "a MIME part has no Content-ID")
        result.append((_cid(cid), headers, pieces[1]))
    return result


def _headers(block: bytes, lenient: bool) -> Message:
    message = Message()
    lines = block.decode("latin-1").split("\n" if lenient else "\r\n")
    for line in lines:
        line = line.strip() if lenient else line
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise sender(MIME_ERROR, "a MIME part header line is malformed")
        message[name.strip().lower()] = value.strip()
    return message


def _cid(value: str) -> str:
    return value.strip().removeprefix("<").removesuffix(">")


def _decode(headers: Message, content: bytes, lenient: bool) -> bytes:
    encoding = (headers.get("content-transfer-encoding") or "binary").strip().lower()
    if encoding in ("binary", "8bit"):
        return content
    if encoding == "base64" and lenient:
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", content), validate=True)
        except binascii.Error as exc:
            raise sender(MIME_ERROR, "a base64 MIME part does not decode") from exc
    raise sender(MIME_ERROR, f"Content-Transfer-Encoding {encoding} is not accepted (binary expected)")


def resolve_includes(envelope: etree._Element, packet: Packet) -> dict[etree._Element, bytes]:
    """Map each element holding an ``xop:Include`` to the bytes of its part; every part used once."""
    resolved: dict[etree._Element, bytes] = {}
    used: set[str] = set()
    for include in envelope.iter(q(XOP, "Include")):
        href = include.get("href") or ""
        if not href.startswith("cid:"):
            raise sender(MIME_ERROR, "xop:Include/@href must be a cid: URL")
        cid = unquote(href[4:])
        if cid not in packet.parts or cid in used:
            raise sender(MIME_ERROR, "an xop:Include does not resolve to exactly one MIME part")
        used.add(cid)
        parent = include.getparent()
        assert parent is not None
        resolved[parent] = packet.parts[cid]
    if set(packet.parts) - used:
        raise sender(MIME_ERROR, "a MIME part is referenced by no xop:Include")
    return resolved
