"""The DICOM intake without sockets: ``prepare`` (pure), the DICOM column of the reply table, the
verdicts and metrics events of ``DicomIntake`` over a fake journal append."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime

import pydicom
import pytest

from passerelle.connector.intake.dicom import DicomIntake, DicomSiteSettings, prepare
from passerelle.connector.intake.replies import DICOM_CANNOT_UNDERSTAND as STATUS_CANNOT_UNDERSTAND
from passerelle.connector.intake.replies import DICOM_DUPLICATE_CONFLICT as STATUS_DUPLICATE_CONFLICT
from passerelle.connector.intake.replies import DICOM_NOT_PUBLISHABLE as STATUS_NOT_PUBLISHABLE
from passerelle.connector.intake.replies import DICOM_OUT_OF_RESOURCES as STATUS_OUT_OF_RESOURCES
from passerelle.connector.intake.replies import DICOM_SUCCESS as STATUS_SUCCESS
from passerelle.connector.intake.replies import Outcome, dicom_comment, dicom_status, refused
from passerelle.connector.listeners.dicom_scp import DicomSettings
from passerelle.errors import (
    DuplicateConflictError,
    IdentityError,
    MappingError,
    ParseError,
    QueueUnavailableError,
    TooLargeError,
    UnsupportedMessageError,
)
from passerelle.mappings.dicom.common import DicomSite
from passerelle.queue.model import AppendResult, Inbound, State
from tests.support.dicom_samples import TEST_INS, kos_dataset, make_kos, make_sr, to_part10

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)


def _prepare(raw: bytes, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        channel="dicom", sender="PACS", now=NOW, test_environment=True, patient_id_map=None,
        site=DicomSite(), max_bytes=1 << 20,
    )  # fmt: skip
    args.update(kw)
    return prepare(raw, **args)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def message(self, kind: str, outcome: str, reason: str) -> None:
        self.events.append((kind, outcome, reason))


def test_usable_kos_becomes_an_accepted_row() -> None:
    ds = kos_dataset()
    raw = to_part10(ds, preamble=b"\x7fELF" + bytes(124))
    p = _prepare(raw)
    assert p.status == STATUS_SUCCESS
    row = p.inbound
    assert (row.state, row.kind, row.channel, row.sender) == (State.ACCEPTED, "dicom", "dicom", "PACS")
    assert (row.message_id, row.dedup_key) == (ds.SOPInstanceUID, f"dicom:{ds.SOPInstanceUID}")
    assert row.lane == f"ins:{TEST_INS}" and row.ack == b""
    assert row.raw[:128] == bytes(128) and row.raw[128:] == raw[128:]


def test_same_dataset_other_transfer_syntax_hashes_the_same() -> None:
    ds = kos_dataset()
    explicit = to_part10(ds)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=True, little_endian=True)
    assert _prepare(explicit).inbound.content_hash == _prepare(buf.getvalue()).inbound.content_hash


def test_unusable_instances_become_rejected_rows_with_a_status() -> None:
    p = _prepare(b"not dicom")
    assert (p.status, p.inbound.state, p.inbound.dedup_key) == (STATUS_CANNOT_UNDERSTAND, State.REJECTED, "")
    p = _prepare(make_sr())  # site not configured: refused with the reason
    assert p.status == STATUS_NOT_PUBLISHABLE and "site configuration" in p.comment
    assert p.inbound.detail.startswith("mapping: 0xC001 ")


def test_too_large_is_not_stored() -> None:
    p = _prepare(make_kos(), max_bytes=1024)
    assert p.status == STATUS_OUT_OF_RESOURCES and p.inbound.raw == b""
    p = _prepare(b"", size=10_000_000, max_bytes=1024)
    assert p.status == STATUS_OUT_OF_RESOURCES


def test_sop_class_mismatch() -> None:
    p = _prepare(make_kos(), expected_sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    assert p.status == 0xA900


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ParseError("x"), STATUS_CANNOT_UNDERSTAND),
        (MappingError("x"), STATUS_NOT_PUBLISHABLE),
        (IdentityError("x"), STATUS_NOT_PUBLISHABLE),
        (UnsupportedMessageError("x"), STATUS_NOT_PUBLISHABLE),
        (TooLargeError("x"), STATUS_OUT_OF_RESOURCES),
        (QueueUnavailableError("x"), STATUS_OUT_OF_RESOURCES),
        (DuplicateConflictError("x"), STATUS_DUPLICATE_CONFLICT),
        (RuntimeError("boom"), STATUS_OUT_OF_RESOURCES),
    ],
)
def test_status_table(exc: Exception, status: int) -> None:
    assert dicom_status(refused(exc)) == status


def test_error_comment_is_short_ascii_and_phi_free() -> None:
    comment = dicom_comment(refused(MappingError("identité non qualifiée : " + "x" * 200)))
    assert len(comment) <= 64 and comment.isascii()
    comment = dicom_comment(refused(RuntimeError("PAT-TROIS 279035121518989")))
    assert comment.startswith("internal error") and "PAT" not in comment and "2790" not in comment


def _intake(accept, rec: Recorder, **kw: object) -> DicomIntake:  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(channel="dicom", test_environment=True, site=DicomSite(), max_bytes=1 << 20,
                                   sender="PACS", metrics=rec, clock=lambda: NOW)  # fmt: skip
    args.update(kw)
    return DicomIntake(accept, **args)  # type: ignore[arg-type]


async def test_verdicts_statuses_and_metrics() -> None:
    rec = Recorder()
    answers: list[object] = [
        [AppendResult(row_id=1)],
        [AppendResult(row_id=1, duplicate=True)],
        [AppendResult(row_id=1, conflict=True)],
        QueueUnavailableError("disk full"),
        [AppendResult(row_id=2)],
    ]

    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    intake = _intake(accept, rec)
    kos = make_kos()
    verdicts = [await intake.receive(kos) for _ in range(4)] + [await intake.receive(b"junk")]
    assert [dicom_status(v) for v in verdicts] == [
        STATUS_SUCCESS,
        STATUS_SUCCESS,
        STATUS_DUPLICATE_CONFLICT,
        STATUS_OUT_OF_RESOURCES,
        STATUS_CANNOT_UNDERSTAND,
    ]
    assert [v.outcome for v in verdicts] == [
        Outcome.ACCEPTED,
        Outcome.DUPLICATE,
        Outcome.CONFLICT,
        Outcome.UNAVAILABLE,
        Outcome.REJECTED,
    ]
    assert [e[1] for e in rec.events] == ["accepted", "duplicate", "conflict", "unavailable", "rejected"]
    assert rec.events[-1] == ("dicom", "rejected", "parse")


async def test_a_transient_failure_is_the_transient_status_and_stores_nothing() -> None:
    """The journal cannot commit, or the identity lookup before it fails: 0xA700 (senders retry), never
    a Cxxx status (which senders treat as final), and nothing is appended."""
    rec = Recorder()
    appended: list[object] = []

    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        appended.append(items)
        raise QueueUnavailableError("database is locked")

    async def lookup(sender: str, local_id: str) -> tuple[str, str] | None:
        raise QueueUnavailableError("database is locked")

    verdict = await _intake(accept, rec).receive(make_kos())
    assert (verdict.outcome, dicom_status(verdict)) == (Outcome.UNAVAILABLE, STATUS_OUT_OF_RESOURCES)
    verdict = await _intake(accept, rec, patient_lookup=lookup).receive(make_kos())
    assert (verdict.outcome, dicom_status(verdict)) == (Outcome.UNAVAILABLE, STATUS_OUT_OF_RESOURCES)
    assert len(appended) == 1  # only the first call reached the journal
    assert rec.events == [("dicom", "unavailable", "queue_unavailable")] * 2


def test_settings_validate_ae_titles() -> None:
    with pytest.raises(ValueError):
        DicomSettings(ae_title="")
    with pytest.raises(ValueError):
        DicomSettings(ae_title="A" * 17)
    with pytest.raises(ValueError):
        DicomSettings(allowed_calling_ae_titles=["ok", ""])
    assert DicomSettings(ae_title=" PASSERELLE ").ae_title == "PASSERELLE"


def test_site_settings_build_the_site() -> None:
    settings = DicomSettings(
        site=DicomSiteSettings(
            organisation_id="1750100125",
            organisation_name="Centre d'imagerie de test",
            facility_type="SA01",
            practice_setting="ETABLISSEMENT",
            timezone="America/Cayenne",
        )
    )
    site = settings.site.to_site()
    assert site.organisation.organisation_id == "1750100125"
    assert site.facility_type is not None and site.facility_type.system == "1.2.250.1.71.4.2.4"
    assert site.practice_setting is not None and site.practice_setting.system == "1.2.250.1.213.1.1.4.9"
    assert str(site.local_tz) == "America/Cayenne"
    # a configured site makes SRs publishable
    assert _prepare(make_sr(), site=site).status == STATUS_SUCCESS
    assert DicomSiteSettings().to_site().facility_type is None
    with pytest.raises(ValueError):
        DicomSiteSettings(timezone="Mars/Olympus")
