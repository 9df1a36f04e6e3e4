"""One folder watcher for every watched folder (CDA documents, DICOM files): the offline twin of the
network listeners. The format-specific part is a :class:`FileIntake` passed in.

Contract (docs/cda-intake.md, docs/dicom.md):

* Only complete files are taken: regular files, not hidden, not named like a file being written
  (``.tmp``, ``.part``, ``.partial``, ``.swp``) nor like our own markers, with one of the spec's
  suffixes when it has some, and either a ``<name>.ready`` marker beside them or the same size and
  modification time at two consecutive scans and at least ``settle_s`` old.
* Every file ends with one verdict of its intake. Positive (accepted, duplicate): moved to
  ``processed/`` -- only after the journal commit. Refused (rejected, conflict): moved to ``failed/``
  with ``<name>.reason.txt`` beside it (reason code, the channel's status, PHI-free detail), counted
  and audited. Unavailable (journal down): left in place, tried again at the next scan.
* A file that cannot be read (I/O error, permission) and a symbolic link (never followed) are refused
  the same way, so one bad file never stops the folder: the scan goes on with the next file.
* Listing, reading, moving and writing reason files run in worker threads, never on the event loop.
  File names come from the directory listing only; moved files lose any execute permission.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from passerelle.connector.files import make_private, private_dir, write_private
from passerelle.connector.intake.cda import CdaIntakeSettings
from passerelle.connector.intake.dicom import DicomFolderSettings
from passerelle.connector.intake.replies import Outcome, Verdict
from passerelle.errors import ParseError, PasserelleError
from passerelle.observability.audit import AuditAction, AuditOutcome, AuditTrail

log = logging.getLogger(__name__)

#: Names never taken: files being written, and the watcher's own markers and reason files.
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".ready", ".reason.txt")


class UnreadableFileError(ParseError):
    """The file could not be read at all (I/O error, permission, symbolic link)."""

    reason = "unreadable"


class FileIntake(Protocol):
    """The format-specific part of a watched folder (:class:`~passerelle.connector.intake.cda.CdaIntake`,
    :class:`~passerelle.connector.intake.dicom.DicomIntake`)."""

    @property
    def kind(self) -> str:
        """The intake's kind (metrics, audit)."""
        ...

    @property
    def max_bytes(self) -> int:
        """Larger files are refused unread."""
        ...

    async def receive(self, raw: bytes, *, size: int | None = None) -> Verdict:
        """Decode and journal one file; ``raw`` is empty when ``size`` is over ``max_bytes``. Never raises."""
        ...

    def refuse(self, error: PasserelleError) -> Verdict:
        """Count a file refused before it was read."""
        ...

    def status(self, verdict: Verdict) -> str:
        """The verdict in the channel's own terms (HTTP status, DICOM status), for the reason file."""
        ...


@dataclass(frozen=True, slots=True)
class FolderSpec:
    name: str  # for logs, task and audit names: "cda-folder", "dicom-folder"
    path: Path
    processed: Path
    failed: Path
    poll_interval_s: float
    settle_s: float = 0.0
    suffixes: tuple[str, ...] = ()  # lower-case name endings taken; empty: any name


def cda_folder(settings: CdaIntakeSettings) -> FolderSpec:
    if settings.folder is None:
        raise ValueError("cda.folder is not set")
    folder = Path(settings.folder)
    return FolderSpec("cda-folder", folder, folder / "processed", folder / "failed", settings.poll_interval_s)


def dicom_folder(settings: DicomFolderSettings) -> FolderSpec:
    path = settings.path
    return FolderSpec(
        "dicom-folder",
        path,
        settings.processed_dir or path / "processed",
        settings.failed_dir or path / "failed",
        settings.poll_interval_s,
        settings.settle_s,
        (".dcm",),
    )


@dataclass(frozen=True, slots=True)
class FolderResult:
    name: str
    verdict: Verdict
    status: str  # the channel's status (HTTP "202", DICOM "0x0000")
    destination: str  # processed | failed | retry
    moved_to: Path | None = None


@dataclass(frozen=True, slots=True)
class _Candidate:
    path: Path
    symlink: bool = False


class FolderWatcher:
    """Polls one folder; :meth:`poll_once` does one pass (tests call it directly).

    :meth:`start` and :meth:`stop` are idempotent; :meth:`stop` lets the file in hand finish (bounded),
    then cancels. :meth:`background_tasks` is the polling task, for the supervisor.
    """

    def __init__(self, spec: FolderSpec, intake: FileIntake, *, audit: AuditTrail | None = None) -> None:
        self.spec = spec
        self.intake = intake
        self._audit = audit
        self._seen: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def start(self) -> None:
        if self._task is not None:
            return
        await asyncio.to_thread(self._make_dirs)
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.spec.name)
        log.info("%s: watching", self.spec.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(task, timeout=max(5.0, self.spec.poll_interval_s * 2))
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("%s: stopped", self.spec.name)

    async def poll_once(self) -> list[FolderResult]:
        """One scan: take every complete file, in name order. Returns what happened to each."""
        await asyncio.to_thread(self._make_dirs)
        results = []
        for candidate in await asyncio.to_thread(self._scan, time.time()):
            result = await self._take(candidate)
            if result is not None:
                results.append(result)
        return results

    # --- internals -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except OSError as exc:  # the folder itself is unreadable: loud, and tried again
                log.warning("%s: scan failed (%s)", self.spec.name, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.spec.poll_interval_s)

    def _make_dirs(self) -> None:
        self.spec.path.mkdir(parents=True, exist_ok=True)  # the drop folder: the producer's too
        for d in (self.spec.processed, self.spec.failed):  # what the gateway took over: its own
            private_dir(d)

    def _wanted(self, name: str) -> bool:
        lower = name.lower()
        if name.startswith(".") or lower.endswith(IGNORED_SUFFIXES):
            return False
        return not self.spec.suffixes or lower.endswith(self.spec.suffixes)

    def _scan(self, now: float) -> list[_Candidate]:
        """Complete files (and symbolic links, to refuse); remembers sizes and times for the next scan."""
        with os.scandir(self.spec.path) as it:
            entries = sorted((e for e in it if self._wanted(e.name)), key=lambda e: e.name)
        seen: dict[str, tuple[int, int]] = {}
        ready: list[_Candidate] = []
        for entry in entries:
            if entry.is_symlink():
                ready.append(_Candidate(Path(entry.path), symlink=True))
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                sig = (st.st_size, st.st_mtime_ns)
                marked = os.path.lexists(f"{entry.path}.ready")
                settled = self._seen.get(entry.name) == sig and now - st.st_mtime_ns / 1e9 >= self.spec.settle_s
                seen[entry.name] = sig  # kept also for a file taken now: left in place, it is retried at once
                if marked or settled:
                    ready.append(_Candidate(Path(entry.path)))
        self._seen = seen
        return ready

    async def _take(self, candidate: _Candidate) -> FolderResult | None:
        size = 0
        if candidate.symlink:
            verdict = self.intake.refuse(UnreadableFileError("symbolic links are not taken", reason="symlink"))
        else:
            try:
                raw, size = await asyncio.to_thread(_read, candidate.path, self.intake.max_bytes)
            except FileNotFoundError:
                return None  # gone since the scan (taken by someone else): nothing to do
            except OSError as exc:
                verdict = self.intake.refuse(UnreadableFileError(f"file cannot be read ({_os_reason(exc)})"))
            else:
                verdict = await self.intake.receive(raw, size=size)
        return await self._settle(candidate.path, verdict, size)

    async def _settle(self, path: Path, verdict: Verdict, size: int) -> FolderResult:
        status = self.intake.status(verdict)
        if verdict.positive:
            moved = await asyncio.to_thread(_move, path, self.spec.processed, None)
            return FolderResult(path.name, verdict, status, "processed", moved)
        if verdict.outcome is Outcome.UNAVAILABLE:
            log.warning("%s: file left in place, journal unavailable (size=%d)", self.spec.name, size)
            return FolderResult(path.name, verdict, status, "retry")
        reason = f"reason: {verdict.reason}\nstatus: {status}\ndetail: {verdict.detail}\n"
        moved = await asyncio.to_thread(_move, path, self.spec.failed, reason)
        log.info("%s: file refused (%s, %s), moved to failed/", self.spec.name, verdict.reason, status)
        await self._record(verdict, status, size)
        return FolderResult(path.name, verdict, status, "failed", moved)

    async def _record(self, verdict: Verdict, status: str, size: int) -> None:
        if self._audit is None:
            return
        try:
            await self._audit.record(
                action=AuditAction.REFUSAL,
                outcome=AuditOutcome.REFUSE,
                reason=verdict.reason,
                actor=f"folder:{self.spec.name}",
                row_id=verdict.row_id or 0,
                document_id=verdict.message_id,
                detail=f"{self.intake.kind} file of {size} bytes moved to failed/ ({status})",
            )
        except Exception as exc:  # noqa: BLE001 - the file is already in failed/; the audit gap is logged
            log.error("%s: audit record failed: %s", self.spec.name, type(exc).__name__)


def _read(path: Path, max_bytes: int) -> tuple[bytes, int]:
    """The file's bytes and size, never following a link; ``b""`` when it is over ``max_bytes``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return (b"" if size > max_bytes else f.read()), size


def _move(path: Path, directory: Path, reason: str | None) -> Path:
    """Move ``path`` into ``directory`` (``a.1.xml`` when ``a.xml`` is there), drop execute bits, write
    the reason file beside it when given, and remove the ``.ready`` marker."""
    target = directory / path.name
    n = 1
    while os.path.lexists(target):
        target = directory / f"{path.stem}.{n}{path.suffix}"
        n += 1
    os.replace(path, target)
    make_private(target)
    if reason is not None:
        write_private(target.with_name(f"{target.name}.reason.txt"), reason.encode("utf-8"))
    Path(f"{path}.ready").unlink(missing_ok=True)
    return target


def _os_reason(exc: OSError) -> str:
    """A PHI-free reason for an I/O error: its errno name, never the path (a file name may hold a name)."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__
