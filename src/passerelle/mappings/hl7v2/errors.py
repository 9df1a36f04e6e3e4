"""Validation errors of the HL7v2 layer, each with its HL7 table 0357 code (see connector/intake/replies.py)."""

from __future__ import annotations

from passerelle.errors import UnsupportedMessageError, ValidationError


class RequiredFieldError(ValidationError, hl7_code="101", reason="required_field"):
    """A required segment field is empty."""


class DataTypeError(ValidationError, hl7_code="102", reason="data_type"):
    """A field whose content is not of its type (bad base64, not well-formed XML...)."""


class TableValueError(ValidationError, hl7_code="103", reason="table_value"):
    """A coded value outside the table the volet allows."""


class SegmentSequenceError(ValidationError, hl7_code="100", reason="segment_sequence"):
    """A segment missing, repeated or out of order."""


def unsupported(message: str, *, location: str, reason: str) -> UnsupportedMessageError:
    """Unsupported type/event/processing id/version: ``reason`` picks ERR-3 200/201/202/203."""
    return UnsupportedMessageError(message, location=location, reason=reason)
