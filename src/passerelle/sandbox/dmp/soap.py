"""SOAP 1.2 envelopes with WS-Addressing: what a request must carry, and the answers the sandbox sends."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from lxml import etree

from passerelle.sandbox.dmp.common import NS, SOAP11, SOAP12, WSA, WSSE, SoapFault, parse_xml, q, sender

ENVELOPE_ERROR = "DMPInvalidSoapMessage"
ADDRESSING_ERROR = "DMPAddressingError"
#: the text Apache CXF answers when a WS-Addressing header is missing
CXF_MISSING_HEADER = "A required header representing a Message Addressing Property is not present"

ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
UUID_URN = re.compile(r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_UNDERSTOOD = {q(WSA, name) for name in ("MessageID", "To", "ReplyTo", "Action", "From", "FaultTo")} | {
    q(WSSE, "Security")
}


@dataclass(frozen=True)
class Request:
    """A checked SOAP request: its header and body child, MessageID and Action."""

    envelope: etree._Element
    header: etree._Element
    body: etree._Element
    message_id: str
    action: str


def _true(value: str | None) -> bool:
    return value in ("true", "1")


def read_envelope(data: bytes, actions: dict[str, str], *, lenient: bool = False) -> Request:
    """Parse and check a SOAP 1.2 request whose ``wsa:Action`` must be a key of ``actions``.

    ``actions`` maps each accepted Action to the Clark name of the body element it goes with.
    ``lenient`` accepts an unqualified ``mustUnderstand`` on ``wsa:Action`` (seen in a real capture).
    """
    try:
        root = parse_xml(data)
    except ValueError as exc:
        raise sender(ENVELOPE_ERROR, "the SOAP part is not well-formed XML") from exc
    if root.tag == q(SOAP11, "Envelope"):
        raise SoapFault("VersionMismatch", None, "SOAP 1.1 envelope; SOAP 1.2 is required")
    if root.tag != q(SOAP12, "Envelope"):
        raise sender(ENVELOPE_ERROR, "the root element is not a SOAP 1.2 Envelope")
    header = root.find(q(SOAP12, "Header"))
    body = root.find(q(SOAP12, "Body"))
    if body is None or len(body) != 1:
        raise sender(ENVELOPE_ERROR, "the SOAP Body must hold exactly one element")
    if header is None:
        raise sender(ADDRESSING_ERROR, CXF_MISSING_HEADER)
    for child in header:
        if _true(child.get(q(SOAP12, "mustUnderstand"))) and child.tag not in _UNDERSTOOD:
            raise SoapFault("MustUnderstand", None, "a header marked mustUnderstand is not understood")
    message_id, action = _addressing(header, lenient)
    if action not in actions:
        raise sender("DMPInvalidAction", "wsa:Action is not an operation of this endpoint")
    if body[0].tag != actions[action]:
        raise sender(ENVELOPE_ERROR, "the Body element does not match wsa:Action")
    return Request(root, header, body[0], message_id, action)


def _addressing(header: etree._Element, lenient: bool) -> tuple[str, str]:
    message_id = header.find(q(WSA, "MessageID"))
    action = header.find(q(WSA, "Action"))
    if message_id is None or action is None or not (message_id.text or "").strip():
        raise sender(ADDRESSING_ERROR, CXF_MISSING_HEADER)
    if not UUID_URN.match((message_id.text or "").strip()):
        raise sender(ADDRESSING_ERROR, "wsa:MessageID must be a urn:uuid")
    if not _true(action.get(q(SOAP12, "mustUnderstand"))) and not (lenient and _true(action.get("mustUnderstand"))):
        raise sender(ADDRESSING_ERROR, 'wsa:Action must carry soap:mustUnderstand="true"')
    if len(header.findall(q(WSA, "Action"))) != 1 or len(header.findall(q(WSA, "MessageID"))) != 1:
        raise sender(ADDRESSING_ERROR, "wsa:Action and wsa:MessageID must appear once")
    reply_to = header.find(f"{q(WSA, 'ReplyTo')}/{q(WSA, 'Address')}")
    if reply_to is not None and (reply_to.text or "").strip() != ANONYMOUS:
        raise sender(ADDRESSING_ERROR, "only the anonymous wsa:ReplyTo is supported")
    return (message_id.text or "").strip(), (action.text or "").strip()


def envelope(action: str, relates_to: str | None, body: etree._Element) -> bytes:
    """A response envelope: ``wsa:Action``, ``wsa:RelatesTo`` the request's MessageID, anonymous ``To``."""
    root = etree.Element(q(SOAP12, "Envelope"), nsmap={"soap": SOAP12, "wsa": WSA})
    header = etree.SubElement(root, q(SOAP12, "Header"))
    etree.SubElement(header, q(WSA, "Action"), {q(SOAP12, "mustUnderstand"): "true"}).text = action
    if relates_to:
        etree.SubElement(header, q(WSA, "RelatesTo")).text = relates_to
    etree.SubElement(header, q(WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(header, q(WSA, "To")).text = ANONYMOUS
    etree.SubElement(root, q(SOAP12, "Body")).append(body)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"


def fault_envelope(fault: SoapFault, relates_to: str | None) -> bytes:
    """``soap:Fault`` with Code/Value, the DMP-style Subcode/Value and Reason/Text."""
    element = etree.Element(q(SOAP12, "Fault"), nsmap={"soap": SOAP12})
    code = etree.SubElement(element, q(SOAP12, "Code"))
    etree.SubElement(code, q(SOAP12, "Value")).text = f"soap:{fault.code}"
    if fault.subcode:
        sub = etree.SubElement(code, q(SOAP12, "Subcode"))
        etree.SubElement(
            sub, q(SOAP12, "Value"), nsmap={"dmp": "urn:passerelle:sandbox:dmp"}
        ).text = f"dmp:{fault.subcode}"
    reason = etree.SubElement(element, q(SOAP12, "Reason"))
    etree.SubElement(
        reason, q(SOAP12, "Text"), {"{http://www.w3.org/XML/1998/namespace}lang": "en"}
    ).text = fault.reason
    return envelope(FAULT_ACTION, relates_to, element)


def multipart(xml: bytes, action: str) -> tuple[str, bytes]:
    """Package an answer like Apache CXF: ``multipart/related`` with one XOP root part."""
    boundary = f"uuid:{uuid.uuid4()}"
    root_id = "root.message@cxf.apache.org"
    head = (
        f"--{boundary}\r\n"
        f'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"; action="{action}"\r\n'
        "Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: <{root_id}>\r\n\r\n"
    ).encode("ascii")
    body = head + xml + f"\r\n--{boundary}--\r\n".encode("ascii")
    header = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"; action="{action}"'
    )
    return header, body


def plain(action: str) -> str:
    return f'application/soap+xml; charset=UTF-8; action="{action}"'


__all__ = ["NS", "Request", "envelope", "fault_envelope", "multipart", "plain", "read_envelope"]
