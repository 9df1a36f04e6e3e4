"""Embedded documents (OBX ED, base64): cheap checks for the ACK path, safe decoding for the worker."""

from __future__ import annotations

import binascii

from lxml import etree

from passerelle.mappings.cda.safe_xml import has_doctype, safe_parser
from passerelle.mappings.hl7v2.errors import DataTypeError

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def check_base64(text: str, *, location: str) -> None:
    """Alphabet and length check without decoding (missing ``=`` padding tolerated)."""
    if not text:
        raise DataTypeError("embedded document is empty", location=location)
    body = text.rstrip("=")
    if len(text) - len(body) > 2 or len(body) % 4 == 1 or not body.isascii():
        raise DataTypeError("embedded document is not valid base64", location=location)
    # bytes.translate deletes the alphabet in one C pass: anything left is not base64
    if body.encode("ascii").translate(None, _B64_ALPHABET):
        raise DataTypeError("embedded document is not valid base64", location=location)


def decode_base64(text: str, *, location: str) -> bytes:
    """Decode base64, adding missing padding (3 ANS examples omit it)."""
    check_base64(text, location=location)
    stripped = text.rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as exc:
        raise DataTypeError("embedded document is not valid base64", location=location) from exc


def parse_xml(data: bytes, *, location: str) -> etree._Element:
    """Parse with the safe parser; a DOCTYPE is refused outright (no DTD, no entities)."""
    try:
        # only a well-formedness check on the ACK path: nothing dropped, so the parse stays minimal
        root = etree.fromstring(data, parser=safe_parser(drop_processing_instructions=False, drop_comments=False))
    except etree.XMLSyntaxError as exc:
        raise DataTypeError("embedded document is not well-formed XML", location=location) from exc
    if has_doctype(root):
        raise DataTypeError("embedded document declares a DTD", location=location)
    return root


def decode_cda(text: str, *, location: str) -> bytes:
    """Base64 -> bytes that parse as well-formed XML (returned undecoded: the raw document)."""
    data = decode_base64(text, location=location)
    parse_xml(data, location=location)
    return data
