"""HL7v2 pure layer: decode frames, read MSH, classify and check CI-SIS volet rules, build ACKs.

Functions over bytes and values only: no I/O, no clock (``now`` is passed in).
"""

from passerelle.mappings.hl7v2.ack import Refusal, Reply, build_ack, build_business_ack, encode_reply, should_reply
from passerelle.mappings.hl7v2.decode import (
    Delimiters,
    Message,
    Segment,
    UnsupportedCharsetError,
    decode_message,
)
from passerelle.mappings.hl7v2.header import Header, read_header, salvage_header
from passerelle.mappings.hl7v2.patient import PatientIds, extract_ids, patient_from_pid
from passerelle.mappings.hl7v2.volet import Classified, EmbeddedDocument, MessageKind, classify
from passerelle.mappings.hl7v2.zfa import ConsentDates, ConsentFeed

__all__ = [
    "Classified",
    "ConsentDates",
    "ConsentFeed",
    "Delimiters",
    "EmbeddedDocument",
    "Header",
    "Message",
    "MessageKind",
    "PatientIds",
    "Refusal",
    "Reply",
    "Segment",
    "UnsupportedCharsetError",
    "build_ack",
    "build_business_ack",
    "classify",
    "decode_message",
    "encode_reply",
    "extract_ids",
    "patient_from_pid",
    "read_header",
    "salvage_header",
    "should_reply",
]
