"""The one table from errors to replies: HL7 ACK code + ERR-3, HTTP status + problem body, DICOM status."""

from __future__ import annotations

import pytest

from passerelle.connector.intake.replies import (
    DICOM_CANNOT_UNDERSTAND,
    DICOM_DUPLICATE_CONFLICT,
    DICOM_NOT_PUBLISHABLE,
    DICOM_OUT_OF_RESOURCES,
    DICOM_SOP_CLASS_MISMATCH,
    DICOM_SUCCESS,
    TABLE,
    Outcome,
    Verdict,
    answer_for,
    dicom_comment,
    dicom_status,
    hl7_refusal,
    http_status,
    problem_body,
    refused,
    unavailable,
)
from passerelle.errors import (
    DuplicateConflictError,
    EncodingError,
    FramingError,
    IdentityError,
    MappingError,
    ParseError,
    PasserelleError,
    QueueUnavailableError,
    RemoteTransientError,
    TooLargeError,
    UnsupportedMessageError,
    ValidationError,
)
from passerelle.mappings.hl7v2.errors import DataTypeError, RequiredFieldError, TableValueError


@pytest.mark.parametrize(
    ("error", "original", "enhanced", "code"),
    [
        (DuplicateConflictError("dup"), "AR", "CR", "205"),
        (UnsupportedMessageError("x", reason="unsupported_type"), "AR", "CR", "200"),
        (UnsupportedMessageError("x", reason="unsupported_event"), "AR", "CR", "201"),
        (UnsupportedMessageError("x", reason="unsupported_processing_id"), "AR", "CR", "202"),
        (UnsupportedMessageError("x", reason="unsupported_version"), "AR", "CR", "203"),
        (UnsupportedMessageError("x", reason="unsupported_charset"), "AR", "CR", "203"),
        (EncodingError("x"), "AR", "CR", "102"),
        (ParseError("x", reason="no_msh"), "AE", "CR", "100"),
        (ParseError("x", reason="required"), "AE", "CR", "101"),
        (ParseError("x"), "AE", "CR", "102"),
        (RequiredFieldError("x"), "AE", "CR", "101"),
        (DataTypeError("x"), "AE", "CR", "102"),
        (TableValueError("x"), "AE", "CR", "103"),
        (ValidationError("x"), "AE", "CR", "101"),
        (TooLargeError("x"), "AE", "CR", "207"),
        (QueueUnavailableError("x"), "AR", "CE", "207"),
        (RemoteTransientError("x"), "AR", "CE", "207"),
        (RuntimeError("x"), "AR", "CE", "207"),
    ],
)
def test_hl7_column(error: BaseException, original: str, enhanced: str, code: str) -> None:
    refusal = hl7_refusal(error)
    assert (refusal.reply.original, refusal.reply.enhanced, refusal.err3) == (original, enhanced, code)


def test_table_last_row_catches_everything() -> None:
    assert TABLE[-1][0] is BaseException


def test_foreign_exception_text_is_never_sent() -> None:
    assert hl7_refusal(RuntimeError("password=hunter2 PAT-TROIS")).text == "internal error"
    verdict = refused(RuntimeError("PAT-TROIS"))
    assert verdict.detail == "internal error while reading the input" and "PAT" not in dicom_comment(verdict)


def test_missing_msh10_is_required_field_error() -> None:
    from passerelle.mappings.hl7v2.decode import decode_message
    from passerelle.mappings.hl7v2.header import read_header

    msg = "MSH|^~\\&|SIL|labo|PFI|Org|202106060931||ORU^R01^ORU_R01||P|2.5\rPID|||1\r"
    with pytest.raises(ParseError) as exc:
        read_header(decode_message(msg.encode()))
    assert exc.value.location == "MSH^1^10"
    assert hl7_refusal(exc.value).err3 == "101"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (TooLargeError("x"), 413),
        (ParseError("x", reason="doctype"), 400),
        (EncodingError("x"), 400),
        (EncodingError("x", reason="unsupported_encoding"), 415),
        (UnsupportedMessageError("x", reason="content_type"), 415),
        (FramingError("x", reason="body_timeout"), 408),
        (ValidationError("x"), 422),
        (MappingError("x"), 422),
        (IdentityError("x"), 422),
        (DuplicateConflictError("x"), 409),
        (QueueUnavailableError("x"), 503),
        (PasserelleError("x", reason="internal"), 500),
    ],
)
def test_http_column(error: PasserelleError, status: int) -> None:
    assert http_status(refused(error)) == status


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ParseError("x"), DICOM_CANNOT_UNDERSTAND),
        (MappingError("x"), DICOM_NOT_PUBLISHABLE),
        (IdentityError("x"), DICOM_NOT_PUBLISHABLE),
        (UnsupportedMessageError("x"), DICOM_NOT_PUBLISHABLE),
        (UnsupportedMessageError("x", reason="sop_class_mismatch"), DICOM_SOP_CLASS_MISMATCH),
        (TooLargeError("x"), DICOM_OUT_OF_RESOURCES),
        (DuplicateConflictError("x"), DICOM_DUPLICATE_CONFLICT),
        (RuntimeError("boom"), DICOM_OUT_OF_RESOURCES),
        # every transient failure is the transient class a sender retries, never a Cxxx "cannot understand"
        (QueueUnavailableError("x"), DICOM_OUT_OF_RESOURCES),
        (RemoteTransientError("x"), DICOM_OUT_OF_RESOURCES),
    ],
)
def test_dicom_column(error: BaseException, status: int) -> None:
    assert dicom_status(refused(error)) == status


def test_outcomes() -> None:
    assert refused(DuplicateConflictError("x")).outcome is Outcome.CONFLICT
    assert refused(ParseError("x")).outcome is Outcome.REJECTED
    assert refused(QueueUnavailableError("x")).outcome is Outcome.UNAVAILABLE
    assert unavailable().outcome is Outcome.UNAVAILABLE and unavailable().reason == "queue_unavailable"
    assert answer_for(RuntimeError()).outcome is Outcome.REJECTED
    ok, dup = Verdict(Outcome.ACCEPTED, 3), Verdict(Outcome.DUPLICATE, 3)
    assert (http_status(ok), http_status(dup)) == (202, 200)
    assert dicom_status(ok) == dicom_status(dup) == DICOM_SUCCESS
    assert ok.positive and dup.positive and not unavailable().positive
    assert (ok.reason, ok.detail, dicom_comment(ok)) == ("", "", "")


def test_problem_body_and_comment_length() -> None:
    body = problem_body(422, "identity_not_qualified", "no INS")
    assert body == {
        "type": "urn:passerelle:problem:identity_not_qualified",
        "title": "Unusable document",
        "status": 422,
        "detail": "no INS",
        "reason": "identity_not_qualified",
    }
    assert len(dicom_comment(refused(MappingError("é" * 200)))) == 64
