"""Storage SCP with real clients (dcmtk storescu, pynetdicom SCU) and a real SQLite journal."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from passerelle.connector.intake.dicom import DicomIntake
from passerelle.connector.intake.replies import DICOM_CANNOT_UNDERSTAND as STATUS_CANNOT_UNDERSTAND
from passerelle.connector.intake.replies import DICOM_DUPLICATE_CONFLICT as STATUS_DUPLICATE_CONFLICT
from passerelle.connector.intake.replies import DICOM_NOT_PUBLISHABLE as STATUS_NOT_PUBLISHABLE
from passerelle.connector.intake.replies import DICOM_OUT_OF_RESOURCES as STATUS_OUT_OF_RESOURCES
from passerelle.connector.listeners.dicom_scp import DicomScp, DicomSettings
from passerelle.errors import QueueUnavailableError
from passerelle.mappings.dicom.common import DicomSite
from passerelle.mappings.document import Author, Code
from passerelle.queue.model import AppendResult, Inbound, Query, Row, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.conformance import dciodvfy_errors
from tests.support.dicom_samples import TEST_INS, make_kos, make_sr

DRIMBOX_KOS = "dicom/kos/fr-drimbox/ko.dcm"
CORPUS_SRS = (
    "dicom/sr/pydicom/reportsi.dcm",
    "dicom/sr/pydicom/reportsi_with_empty_number_tags.dcm",
    "dicom/sr/pydicom/test-SR.dcm",
    "dicom/sr/highdicom/sr_document.dcm",
    "dicom/sr/highdicom/sr_document_with_multiple_groups.dcm",
)
STORESCU = shutil.which("storescu")
needs_storescu = pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu not installed (apt dcmtk)")


SITE = DicomSite(
    organisation=Author(organisation_id="1750100125", organisation_name="Centre d'imagerie de test"),
    facility_type=Code(code="SA01", system="1.2.250.1.71.4.2.4"),
    practice_setting=Code(code="ETABLISSEMENT", system="1.2.250.1.213.1.1.4.9"),
)


def scp_for(settings: DicomSettings, accept, *, test_environment: bool = True, lookup=None) -> DicomScp:  # type: ignore[no-untyped-def]
    """The SCP with its intake, wired as the composition root does."""
    intake = DicomIntake(
        accept,
        channel="dicom",
        test_environment=test_environment,
        site=SITE,
        max_bytes=settings.max_dataset_bytes,
        patient_lookup=lookup,
    )
    return DicomScp(settings, intake)


async def _scp(accept, *, test_environment: bool = True, **settings: object) -> DicomScp:  # type: ignore[no-untyped-def]
    scp = scp_for(DicomSettings(port=0, **settings), accept, test_environment=test_environment)  # type: ignore[arg-type]
    await scp.start()
    return scp


async def _storescu(port: int, path: Path, *, calling: str = "MODALITY") -> asyncio.subprocess.Process:
    assert STORESCU is not None
    return await asyncio.create_subprocess_exec(
        STORESCU, "-R", "-aet", calling, "-aec", "PASSERELLE", "127.0.0.1", str(port), str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def _c_store(port: int, path: Path, *, calling: str = "MODALITY", transfer_syntax: str = "") -> Dataset | None:
    """Send one file with pynetdicom's SCU; returns the status dataset (None if not associated)."""
    ds = pydicom.dcmread(path)
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, transfer_syntax or ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PASSERELLE")
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


async def _rows(journal: SQLiteJournal) -> list[Row]:
    return await journal.find(Query(limit=100))


def _write(tmp_path: Path, name: str, raw: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


# --- the DRIM-M manifest over the network ---------------------------------------------------------


@needs_storescu
async def test_storescu_kos_success_only_after_commit(corpus_dir: Path, tmp_path: Path, journal: SQLiteJournal) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def gated_accept(items: Sequence[Inbound]) -> list[AppendResult]:
        entered.set()
        await release.wait()
        return await journal.append(items)

    scp = await _scp(gated_accept)
    try:
        proc = await _storescu(scp.port, corpus_dir / DRIMBOX_KOS)
        await asyncio.wait_for(entered.wait(), 30)
        # the C-STORE response cannot have been sent: the row is not committed yet
        assert proc.returncode is None
        assert await _rows(journal) == []
        release.set()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode(errors="replace")
    finally:
        await scp.stop()

    [row] = await _rows(journal)
    assert row.state is State.ACCEPTED and row.channel == "dicom" and row.kind == "dicom"
    assert row.sender == "MODALITY"
    assert row.message_id == "1.3.2.751468943.3.1234.56838.231114144457.1.1.1"
    assert row.dedup_key == f"dicom:{row.message_id}"
    assert row.lane == "ins:162018885045327"
    # stored as a Part 10 file with a zeroed preamble, same dataset
    assert row.raw[:128] == bytes(128) and row.raw[128:132] == b"DICM"
    stored = pydicom.dcmread(io.BytesIO(row.raw))
    original = pydicom.dcmread(corpus_dir / DRIMBOX_KOS)
    assert stored.SOPInstanceUID == original.SOPInstanceUID and stored == original
    # what will be forwarded passes the IOD checker
    received = tmp_path / "received.dcm"
    received.write_bytes(row.raw)
    assert dciodvfy_errors(received) == []


@needs_storescu
@pytest.mark.parametrize("name", CORPUS_SRS)
async def test_storescu_corpus_srs_are_refused_with_a_failure_status(
    corpus_dir: Path, journal: SQLiteJournal, name: str
) -> None:
    scp = await _scp(journal.append)
    try:
        proc = await _storescu(scp.port, corpus_dir / name)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await scp.stop()
    assert proc.returncode != 0, out.decode(errors="replace")
    [row] = await _rows(journal)
    assert row.state is State.REJECTED and row.dedup_key == ""
    assert "0xC00" in row.detail


@needs_storescu
async def test_storescu_synthetic_kos_and_sr(tmp_path: Path, journal: SQLiteJournal) -> None:
    kos = _write(tmp_path, "kos.dcm", make_kos())
    sr = _write(tmp_path, "sr.dcm", make_sr())
    scp = await _scp(journal.append)
    try:
        for path in (kos, sr):
            proc = await _storescu(scp.port, path)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, out.decode(errors="replace")
    finally:
        await scp.stop()
    rows = await _rows(journal)
    assert [r.state for r in rows] == [State.ACCEPTED, State.ACCEPTED]
    assert {r.lane for r in rows} == {f"ins:{TEST_INS}"}


@needs_storescu
async def test_images_are_not_negotiated(corpus_dir: Path, journal: SQLiteJournal) -> None:
    scp = await _scp(journal.append)
    try:
        proc = await _storescu(scp.port, corpus_dir / "dicom/headers/pydicom/CT_small.dcm")
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await scp.stop()
    assert proc.returncode != 0
    assert b"presentation context" in out.lower()
    assert await _rows(journal) == []


# --- statuses (pynetdicom SCU, to read the exact status and comment) --------------------------------


async def test_test_ins_refused_in_production(corpus_dir: Path, journal: SQLiteJournal) -> None:
    scp = await _scp(journal.append, test_environment=False)
    try:
        status = await asyncio.to_thread(_c_store, scp.port, corpus_dir / DRIMBOX_KOS)
    finally:
        await scp.stop()
    assert status is not None and status.Status == STATUS_NOT_PUBLISHABLE
    assert status.ErrorComment.startswith("identity not qualified")
    assert "162018885045327" not in status.ErrorComment
    [row] = await _rows(journal)
    assert row.state is State.REJECTED


async def test_duplicate_same_bytes_is_success_other_bytes_is_conflict(tmp_path: Path, journal: SQLiteJournal) -> None:
    raw = make_kos()
    first = _write(tmp_path, "a.dcm", raw)
    ds = pydicom.dcmread(first)
    ds.StudyDescription = "changed content, same SOP Instance UID"
    changed = tmp_path / "b.dcm"
    ds.save_as(changed, enforce_file_format=True)
    scp = await _scp(journal.append)
    try:
        s1 = await asyncio.to_thread(_c_store, scp.port, first)
        s2 = await asyncio.to_thread(_c_store, scp.port, first)
        # the same object in another transfer syntax is still the same object
        s3 = await asyncio.to_thread(_c_store, scp.port, first, transfer_syntax="1.2.840.10008.1.2")
        s4 = await asyncio.to_thread(_c_store, scp.port, changed)
    finally:
        await scp.stop()
    assert [s.Status for s in (s1, s2, s3) if s is not None] == [0, 0, 0]
    assert s4 is not None and s4.Status == STATUS_DUPLICATE_CONFLICT
    accepted = [r for r in await _rows(journal) if r.state is State.ACCEPTED]
    assert len(accepted) == 1


async def test_journal_failure_never_gives_success(tmp_path: Path) -> None:
    async def broken(items: Sequence[Inbound]) -> list[AppendResult]:
        raise QueueUnavailableError("disk full")

    scp = await _scp(broken)
    try:
        status = await asyncio.to_thread(_c_store, scp.port, _write(tmp_path, "k.dcm", make_kos()))
    finally:
        await scp.stop()
    assert status is not None and status.Status == STATUS_OUT_OF_RESOURCES


async def test_dataset_over_the_limit_is_refused(tmp_path: Path, journal: SQLiteJournal) -> None:
    scp = await _scp(journal.append, max_dataset_bytes=1024)
    try:
        status = await asyncio.to_thread(_c_store, scp.port, _write(tmp_path, "k.dcm", make_kos()))
    finally:
        await scp.stop()
    assert status is not None and status.Status == STATUS_OUT_OF_RESOURCES
    assert await _rows(journal) == []


async def test_undecodable_value_is_cannot_understand(tmp_path: Path, journal: SQLiteJournal) -> None:
    def edit(ds: Dataset) -> None:
        ds.ContentDate = "2026-03-11"  # not a DA value

    scp = await _scp(journal.append)
    try:
        status = await asyncio.to_thread(_c_store, scp.port, _write(tmp_path, "k.dcm", make_kos(edit=edit)))
    finally:
        await scp.stop()
    assert status is not None and status.Status == STATUS_CANNOT_UNDERSTAND


async def test_calling_ae_title_not_allowed(tmp_path: Path, journal: SQLiteJournal) -> None:
    scp = await _scp(journal.append, allowed_calling_ae_titles=["RIS_OK"])
    try:
        path = _write(tmp_path, "k.dcm", make_kos())
        assert await asyncio.to_thread(_c_store, scp.port, path, calling="INTRUDER") is None
        ok = await asyncio.to_thread(_c_store, scp.port, path, calling="RIS_OK")
    finally:
        await scp.stop()
    assert ok is not None and ok.Status == 0


async def test_start_and_stop_are_idempotent(journal: SQLiteJournal) -> None:
    scp = await _scp(journal.append)
    port = scp.port
    await scp.start()
    assert scp.port == port
    await scp.stop()
    await scp.stop()
    assert not scp.running


async def test_local_patient_id_resolved_through_the_lookup(tmp_path: Path, journal: SQLiteJournal) -> None:
    calls: list[tuple[str, str]] = []

    async def lookup(sender: str, local_id: str) -> tuple[str, str] | None:
        calls.append((sender, local_id))
        return (TEST_INS, "1.2.250.1.213.1.4.10") if local_id == "IPP-42" else None

    def local(pid: str):  # type: ignore[no-untyped-def]
        def edit(ds: Dataset) -> None:
            ds.PatientID = pid
            ds.IssuerOfPatientID = "HOPITAL-TEST"

        return edit

    scp = scp_for(DicomSettings(port=0), journal.append, lookup=lookup)
    await scp.start()
    try:
        ok = await asyncio.to_thread(_c_store, scp.port, _write(tmp_path, "a.dcm", make_kos(edit=local("IPP-42"))))
        ko = await asyncio.to_thread(_c_store, scp.port, _write(tmp_path, "b.dcm", make_kos(edit=local("IPP-99"))))
    finally:
        await scp.stop()
    assert ok is not None and ok.Status == 0
    assert ko is not None and ko.Status == STATUS_NOT_PUBLISHABLE
    assert calls == [("MODALITY", "IPP-42"), ("MODALITY", "IPP-99")]
    accepted = [r for r in await _rows(journal) if r.state is State.ACCEPTED]
    assert [r.lane for r in accepted] == [f"ins:{TEST_INS}"]
