"""Watched DICOM folder with real files and a real SQLite journal."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from passerelle.connector.intake.dicom import DicomFolderSettings, DicomIntake
from passerelle.connector.listeners.folder import FolderWatcher, dicom_folder
from passerelle.errors import QueueUnavailableError
from passerelle.mappings.dicom.common import DicomSite
from passerelle.queue.model import AppendResult, Inbound, Query, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.dicom_samples import make_kos


class Watcher(FolderWatcher):
    """The DICOM folder as the composition root builds it, with the old test vocabulary."""

    def __init__(self, settings: DicomFolderSettings, accept) -> None:  # type: ignore[no-untyped-def]
        intake = DicomIntake(
            accept,
            channel="folder",
            test_environment=True,
            site=DicomSite(),
            max_bytes=settings.max_file_bytes,
            sender=settings.sender,
        )
        super().__init__(dicom_folder(settings), intake)
        self.settings = settings
        self.processed_dir, self.failed_dir = self.spec.processed, self.spec.failed
        self.scan_once = self.poll_once


def _watcher(tmp_path: Path, accept, **kw: object) -> Watcher:  # type: ignore[no-untyped-def]
    settings = DicomFolderSettings(path=tmp_path / "in", settle_s=0, **kw)  # type: ignore[arg-type]
    settings.path.mkdir(exist_ok=True)
    return Watcher(settings, accept)


async def test_complete_files_only_then_processed(tmp_path: Path, journal: SQLiteJournal) -> None:
    w = _watcher(tmp_path, journal.append)
    (w.settings.path / "a.dcm").write_bytes(make_kos())
    (w.settings.path / "notes.txt").write_text("ignored")
    (w.settings.path / ".hidden.dcm").write_bytes(make_kos())
    # first scan only records size and mtime: a file still being written is never taken
    assert await w.scan_once() == []
    [out] = await w.scan_once()
    assert (out.name, out.status, out.destination) == ("a.dcm", "0x0000", "processed")
    assert (w.processed_dir / "a.dcm").exists() and not (w.settings.path / "a.dcm").exists()
    assert not os.access(w.processed_dir / "a.dcm", os.X_OK)
    [row] = await journal.find(Query(limit=10))
    assert row.state is State.ACCEPTED and row.channel == "folder" and row.sender == "folder"
    assert (w.settings.path / "notes.txt").exists() and (w.settings.path / ".hidden.dcm").exists()


async def test_file_growing_between_scans_waits(tmp_path: Path, journal: SQLiteJournal) -> None:
    w = _watcher(tmp_path, journal.append)
    raw = make_kos()
    path = w.settings.path / "b.DCM"
    path.write_bytes(raw[:200])
    assert await w.scan_once() == []
    path.write_bytes(raw)  # size changed: not complete yet
    assert await w.scan_once() == []
    [out] = await w.scan_once()
    assert out.destination == "processed"


async def test_refused_file_goes_to_failed_with_reason(
    corpus_dir: Path, tmp_path: Path, journal: SQLiteJournal
) -> None:
    w = _watcher(tmp_path, journal.append)
    shutil.copy(corpus_dir / "dicom/headers/pydicom/no_meta.dcm", w.settings.path / "c.dcm")
    shutil.copy(corpus_dir / "dicom/sr/pydicom/test-SR.dcm", w.settings.path / "d.dcm")
    await w.scan_once()
    outs = {o.name: o for o in await w.scan_once()}
    assert outs["c.dcm"].destination == "failed" and outs["c.dcm"].status == "0xC000"
    assert outs["d.dcm"].destination == "failed" and outs["d.dcm"].status == "0xC001"
    reason = (w.failed_dir / "c.dcm.reason.txt").read_text()
    assert reason.startswith("reason: parse\nstatus: 0xC000\n") and "DICM" in reason
    assert {r.state for r in await journal.find(Query(limit=10))} == {State.REJECTED}


async def test_journal_down_leaves_the_file_for_next_scan(tmp_path: Path, journal: SQLiteJournal) -> None:
    calls = 0

    async def flaky(items: Sequence[Inbound]) -> list[AppendResult]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise QueueUnavailableError("database locked")
        return await journal.append(items)

    w = _watcher(tmp_path, flaky)
    (w.settings.path / "e.dcm").write_bytes(make_kos())
    await w.scan_once()
    [first] = await w.scan_once()
    assert first.destination == "retry" and (w.settings.path / "e.dcm").exists()
    [second] = await w.scan_once()
    assert second.destination == "processed"


async def test_symlink_is_not_followed(tmp_path: Path, journal: SQLiteJournal) -> None:
    w = _watcher(tmp_path, journal.append)
    secret = tmp_path / "outside.dcm"
    secret.write_bytes(make_kos())
    (w.settings.path / "link.dcm").symlink_to(secret)
    [out] = await w.scan_once()
    assert out.destination == "failed" and secret.exists()
    assert await journal.find(Query(limit=10)) == []


async def test_oversized_file_refused_without_reading(tmp_path: Path, journal: SQLiteJournal) -> None:
    w = _watcher(tmp_path, journal.append, max_file_bytes=1024)
    (w.settings.path / "big.dcm").write_bytes(make_kos())
    await w.scan_once()
    [out] = await w.scan_once()
    assert out.destination == "failed" and out.status == "0xA700"


async def test_start_stop_idempotent(tmp_path: Path, journal: SQLiteJournal) -> None:
    w = _watcher(tmp_path, journal.append, poll_interval_s=0.01)
    await w.start()
    await w.start()
    await w.stop()
    await w.stop()


async def test_dicom_values_never_become_paths(tmp_path: Path, journal: SQLiteJournal) -> None:
    """docs/bad-input.md, B-DICOM-10: identifiers holding ``../`` or an absolute path name no file; files are
    named by the directory listing and land in processed/ or failed/ only."""
    settings = DicomFolderSettings(path=tmp_path / "a" / "b" / "in", settle_s=0)
    settings.path.mkdir(parents=True)
    w = Watcher(settings, journal.append)
    hostile = {"PatientID": "../../escape", "IssuerOfPatientID": "../../../escape", "StudyID": "/tmp/escape"}

    def edit(ds) -> None:  # type: ignore[no-untyped-def]
        for keyword, value in hostile.items():
            setattr(ds, keyword, value)

    (settings.path / "x.dcm").write_bytes(make_kos(edit=edit))
    (settings.path / "y.dcm").write_bytes(make_kos(edit=lambda ds: setattr(ds, "PatientID", "/" + "x" * 60)))
    before = {p for p in tmp_path.rglob("*") if "journal" not in p.name}
    await w.scan_once()
    outs = await w.scan_once()
    assert sorted(o.name for o in outs) == ["x.dcm", "y.dcm"]
    created = {p for p in tmp_path.rglob("*") if "journal" not in p.name} - before
    allowed = {w.processed_dir, w.failed_dir}
    assert created and all(p in allowed or p.parent in allowed for p in created), created
    assert {p.name for p in created if p.is_file()} <= {"x.dcm", "y.dcm", "x.dcm.reason.txt", "y.dcm.reason.txt"}
    assert not [p for p in tmp_path.rglob("*escape*")]
