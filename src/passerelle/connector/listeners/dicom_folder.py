"""Watched folder of DICOM Part 10 files (``*.dcm``): the offline twin of the Storage SCP.

Contract (docs/dicom.md):

* Only complete files are taken: regular files (never symlinks) named ``*.dcm`` (any case), not
  hidden, whose size and modification time did not change between two scans and are at least
  ``settle_s`` old. Writers should still write under another name and rename into the folder.
* Each file is checked exactly like a C-STORE (:func:`passerelle.connector.listeners.dicom_scp.prepare`) and
  appended through ``accept``. Only after ``accept`` returned is the file moved: to ``processed/``
  when accepted (or an identical duplicate), to ``failed/`` with a ``<name>.reason.txt`` (PHI-free)
  when refused. When ``accept`` fails (journal unavailable) the file stays where it is and is tried
  again at the next scan.
* File names come from the directory listing, never from DICOM attributes; moved files lose any
  execute permission.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from passerelle.connector.intake.metrics import IntakeMetrics, NullMetrics
from passerelle.connector.listeners.dicom_scp import (
    STATUS_SUCCESS,
    Accept,
    PatientLookup,
    local_patient_id,
    outcome,
    prepare,
    record,
)
from passerelle.mappings.dicom.common import DicomSite

log = logging.getLogger(__name__)


class DicomFolderSettings(BaseModel):
    """The ``dicom_folder`` group of the settings (mounted by the lead)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    path: Path = Path("var/dicom-in")
    #: Defaults: ``<path>/processed`` and ``<path>/failed``.
    processed_dir: Path | None = None
    failed_dir: Path | None = None
    poll_interval_s: float = Field(2.0, gt=0)
    #: A file must be unchanged across two scans and at least this old (seconds) to be taken.
    settle_s: float = Field(2.0, ge=0)
    max_file_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Sender name journaled for files of this folder.
    sender: str = "folder"


@dataclass(frozen=True)
class FolderOutcome:
    name: str
    status: int
    destination: str  # processed | failed | retry
    row_id: int | None = None
    reason: str = ""


class DicomFolderWatcher:
    """Polls one folder; :meth:`scan_once` does one pass (tests call it directly)."""

    def __init__(
        self,
        settings: DicomFolderSettings,
        accept: Accept,
        *,
        test_environment: bool,
        site: DicomSite | None = None,
        patient_lookup: PatientLookup | None = None,
        metrics: IntakeMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._accept = accept
        self._metrics: IntakeMetrics = metrics or NullMetrics()
        self._test_environment = test_environment
        self._site = site or DicomSite()
        self._lookup = patient_lookup
        self._clock = clock
        self._seen: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def processed_dir(self) -> Path:
        return self.settings.processed_dir or self.settings.path / "processed"

    @property
    def failed_dir(self) -> Path:
        return self.settings.failed_dir or self.settings.path / "failed"

    async def start(self) -> None:
        if self._task is not None:
            return
        for d in (self.settings.path, self.processed_dir, self.failed_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="dicom-folder")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            try:
                await self.scan_once()
            except OSError as exc:
                log.error("dicom folder: scan failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.poll_interval_s)

    def _complete(self, entry: os.DirEntry[str], now: float) -> bool:
        st = entry.stat(follow_symlinks=False)
        key = (st.st_size, st.st_mtime_ns)
        previous = self._seen.get(entry.name)
        self._seen[entry.name] = key
        return previous == key and now - st.st_mtime_ns / 1e9 >= self.settings.settle_s

    async def scan_once(self) -> list[FolderOutcome]:
        """Take every complete file of the folder once; returns what happened to each."""
        for d in (self.processed_dir, self.failed_dir):
            d.mkdir(parents=True, exist_ok=True)
        now = self._clock().timestamp()
        outcomes: list[FolderOutcome] = []
        present: set[str] = set()
        with os.scandir(self.settings.path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.lower().endswith(".dcm"):
                continue
            present.add(entry.name)
            if entry.is_symlink():
                outcomes.append(self._fail(entry.name, "symbolic links are not taken", 0xC000))
                continue
            if not entry.is_file(follow_symlinks=False) or not self._complete(entry, now):
                continue
            outcomes.append(await self._take(entry.name))
        self._seen = {k: v for k, v in self._seen.items() if k in present}
        return outcomes

    async def _take(self, name: str) -> FolderOutcome:
        path = self.settings.path / name
        size = path.stat(follow_symlinks=False).st_size
        raw = b"" if size > self.settings.max_file_bytes else path.read_bytes()
        sender = self.settings.sender
        mapping = await self._patient_map(raw, sender)
        prepared = await asyncio.to_thread(
            prepare,
            raw,
            channel="folder",
            sender=sender,
            now=self._clock(),
            test_environment=self._test_environment,
            patient_id_map=mapping,
            site=self._site,
            max_bytes=self.settings.max_file_bytes,
            size=size,
        )
        try:
            results = await self._accept([prepared.inbound])
        except Exception as exc:  # noqa: BLE001 - the file stays in place and is retried
            log.error("dicom folder: journal append failed for a file: %s", type(exc).__name__)
            record(self._metrics, prepared, None)
            return FolderOutcome(name, 0xA700, "retry", None, "storage unavailable")
        record(self._metrics, prepared, results[0])
        status, comment = outcome(prepared, results[0])
        self._seen.pop(name, None)
        if status == STATUS_SUCCESS:
            self._move(name, self.processed_dir)
            log.info("dicom folder: file -> row %d", results[0].row_id)
            return FolderOutcome(name, status, "processed", results[0].row_id)
        result = self._fail(name, comment, status)
        return FolderOutcome(name, status, "failed", results[0].row_id, result.reason)

    def _fail(self, name: str, reason: str, status: int) -> FolderOutcome:
        target = self._move(name, self.failed_dir)
        reason_line = f"0x{status:04X} {reason}\n"
        (target.parent / f"{target.name}.reason.txt").write_text(reason_line, encoding="utf-8")
        log.info("dicom folder: file refused (0x%04X)", status)
        return FolderOutcome(name, status, "failed", None, reason)

    def _move(self, name: str, directory: Path) -> Path:
        target = directory / name
        n = 1
        while target.exists() or target.is_symlink():
            target = directory / f"{name}.{n}"
            n += 1
        os.replace(self.settings.path / name, target)
        if not target.is_symlink():
            mode = target.stat().st_mode
            target.chmod(stat.S_IMODE(mode) & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))
        return target

    async def _patient_map(self, raw: bytes, sender: str) -> dict[str, tuple[str, str]] | None:
        if self._lookup is None or not raw:
            return None
        local_id = await asyncio.to_thread(local_patient_id, raw)
        if not local_id:
            return None
        found = await self._lookup(sender, local_id)
        return {local_id: found} if found is not None else None
