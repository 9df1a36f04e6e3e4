"""Safe parsing of untrusted XML (CDA documents, embedded documents of HL7v2 messages).

The rules (docs/interop-reference.md, "Safe XML"): the byte size is capped before lxml sees anything;
a DOCTYPE anywhere is refused (reason ``doctype``), so no DTD, internal or external entity, parameter
entity or billion-laughs construct is ever processed; the parser itself also runs with
``resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False``; processing instructions
(``<?xml-stylesheet?>``) and comments are dropped at parse time and never executed; nesting depth and
element count are capped. Encodings: UTF-8 (with or without BOM) and the single-byte encodings lxml
knows, as declared in the XML declaration; UTF-16/UTF-32 are refused (reason
``unsupported_encoding``; bytes invalid in the declared encoding: reason ``encoding``), so the DOCTYPE
scan always reads ASCII-compatible bytes.

:func:`safe_parser` is the one lxml parser factory of the project; everything that parses XML
received from outside takes its parser from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from passerelle.errors import EncodingError, ParseError, TooLargeError, ValidationError

HL7_NS = "urn:hl7-org:v3"
CDA_ROOT = f"{{{HL7_NS}}}ClinicalDocument"

_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_XML_DECL = re.compile(rb"^<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_UTF16 = "UTF-16/UTF-32 XML is not supported; send UTF-8"


@dataclass(frozen=True, slots=True)
class CdaLimits:
    """Caps applied before and during parsing (every one configurable by the intake settings)."""

    max_bytes: int = 20 * 1024 * 1024
    max_depth: int = 200
    max_elements: int = 500_000


DEFAULT_LIMITS = CdaLimits()


def safe_parser(*, drop_processing_instructions: bool = True, drop_comments: bool = True) -> etree.XMLParser:
    """A fresh lxml parser that never loads a DTD, expands an entity, touches the network or builds a
    huge tree. A new one per call: lxml parsers keep state and are not safe to share across threads."""
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_pis=drop_processing_instructions,
        remove_comments=drop_comments,
        collect_ids=False,
    )


def has_doctype(root: etree._Element) -> bool:
    """True when the parsed document declared a DOCTYPE (refused everywhere)."""
    doctype: str = getattr(root.getroottree().docinfo, "doctype", "") or ""
    return bool(doctype)


def check_encoding(raw: bytes) -> None:
    """Refuse UTF-16/UTF-32 (BOM, NUL bytes or declaration); the rest is left to lxml."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise EncodingError(_UTF16, reason="unsupported_encoding")
    if b"\x00" in raw[:64]:
        raise EncodingError(_UTF16, reason="unsupported_encoding")
    head = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    m = _XML_DECL.match(head[:200])
    if m and m.group(1).decode("ascii").upper().replace("_", "-").startswith(("UTF-16", "UTF-32", "UCS")):
        raise EncodingError(_UTF16, reason="unsupported_encoding")


def parse_xml(raw: bytes, limits: CdaLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted XML bytes safely and return the root element.

    Raises :class:`TooLargeError` (reason ``too_large``) over ``max_bytes``, :class:`ParseError`
    with reason ``doctype`` for any DOCTYPE/ENTITY declaration, ``depth``/``too_many_elements``
    over the structural caps, ``xml`` when not well-formed, and :class:`EncodingError` (reason
    ``unsupported_encoding``) for UTF-16/32, (reason ``encoding``) for bytes invalid in the declared encoding.
    """
    if len(raw) > limits.max_bytes:
        raise TooLargeError(f"XML document of {len(raw)} bytes exceeds the {limits.max_bytes}-byte cap")
    if not raw.strip():
        raise ParseError("empty XML document", reason="xml")
    check_encoding(raw)
    if _DOCTYPE.search(raw) or _ENTITY.search(raw):
        raise ParseError("DOCTYPE not allowed", reason="doctype")
    try:
        root = etree.fromstring(raw, parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc) from exc
    if has_doctype(root):
        raise ParseError("DOCTYPE not allowed", reason="doctype")
    _check_structure(root, limits)
    return root


def _syntax_error(exc: etree.XMLSyntaxError) -> ParseError:
    text = str(exc).lower()
    if "encoding" in text or "utf-8" in text or ("char" in text and "range" in text):
        return EncodingError("XML bytes are invalid in the declared encoding", reason="encoding")
    if "depth" in text or "nesting" in text:
        return ParseError("XML nesting too deep", reason="depth")
    line = getattr(exc, "lineno", 0)
    return ParseError(f"XML not well-formed (line {line})", reason="xml")


def _check_structure(root: etree._Element, limits: CdaLimits) -> None:
    # Nesting can never be deeper than the element count: a tree of at most ``max_depth`` elements
    # (every CDA header seen so far) needs only the count, not the walk tracking depth.
    if limits.max_depth <= limits.max_elements and sum(1 for _ in root.iter()) <= limits.max_depth:
        return
    count = 0
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        count += 1
        depth += 1
        if depth > limits.max_depth:
            raise ParseError(f"XML nesting deeper than {limits.max_depth}", reason="depth")
        if count > limits.max_elements:
            raise ParseError(f"more than {limits.max_elements} XML elements", reason="too_many_elements")


def parse_cda(raw: bytes, limits: CdaLimits = DEFAULT_LIMITS) -> etree._Element:
    """Safe parse + check that the root is an HL7 v3 ``ClinicalDocument`` (reason ``not_cda``)."""
    root = parse_xml(raw, limits)
    if root.tag != CDA_ROOT:
        raise ValidationError("root element is not an HL7 v3 ClinicalDocument", reason="not_cda")
    return root
