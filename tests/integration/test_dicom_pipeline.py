"""storescu → Storage SCP → SQLite journal → the worker's RowMapper: the KOS becomes its document, and a
new manifest for the same study replaces it."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from passerelle.connector.dispatch.mapper import RowMapper
from passerelle.connector.intake.dicom import DicomIntake
from passerelle.connector.intake.hl7 import Hl7IntakeSettings
from passerelle.connector.listeners.dicom_scp import DicomScp, DicomSettings
from passerelle.mappings.document import Action, Document
from passerelle.queue.model import Query, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.dicom_samples import make_kos

STORESCU = shutil.which("storescu")
pytestmark = pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu not installed (apt dcmtk)")


async def _send(port: int, path: Path) -> None:
    assert STORESCU is not None
    proc = await asyncio.create_subprocess_exec(
        STORESCU, "-R", "-aet", "PACS_TEST", "-aec", "PASSERELLE", "127.0.0.1", str(port), str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode(errors="replace")


async def test_kos_from_storescu_to_document_then_replaced(corpus_dir: Path, tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "journal.sqlite3")
    await journal.open()
    settings = DicomSettings(port=0)
    intake = DicomIntake(
        journal.append,
        channel="dicom",
        test_environment=True,
        site=settings.site.to_site(),
        max_bytes=settings.max_dataset_bytes,
    )
    scp = DicomScp(settings, intake)
    await scp.start()
    study = "1.2.826.0.1.3680043.10.543.4242"
    (tmp_path / "k1.dcm").write_bytes(make_kos(study))
    (tmp_path / "k2.dcm").write_bytes(make_kos(study))  # the study changed: a new manifest
    try:
        await _send(scp.port, corpus_dir / "dicom/kos/fr-drimbox/ko.dcm")
        await _send(scp.port, tmp_path / "k1.dcm")
        await _send(scp.port, tmp_path / "k2.dcm")
    finally:
        await scp.stop()
    try:
        rows = sorted(await journal.find(Query(states=[State.ACCEPTED], limit=10)), key=lambda r: r.id)
        assert [r.kind for r in rows] == ["dicom"] * 3
        mapper = RowMapper(
            journal, Hl7IntakeSettings(), test_environment=True, clock=lambda: datetime.now(UTC), oid_root="1.2.3"
        )
        docs = [await mapper.map(r) for r in rows]
        assert all(isinstance(d, Document) for d in docs)
        drim, first, second = docs  # type: ignore[misc]
        assert drim.unique_id == "1.3.2.751468943.3.1234.56838.231114144457.1.1.1"
        assert drim.type_code.code == "IMG-KOS" and drim.mime_type == "application/dicom"
        assert drim.patient.xds_patient_id == "162018885045327^^^&1.2.250.1.213.1.4.10&ISO^NH"
        assert (first.action, first.version) == (Action.PUBLISH, 1)
        assert (second.action, second.replaces, second.set_id, second.version) == (
            Action.REPLACE,
            first.unique_id,
            first.set_id,
            2,
        )
    finally:
        await journal.close()
