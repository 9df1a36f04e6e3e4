"""The one folder watcher with a recording intake: read failures and intake bugs never stop the folder,
reads happen off the event loop, and each outcome has its destination."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

import passerelle.connector.listeners.folder as folder
from passerelle.connector.intake.replies import Outcome, Verdict, http_status, refused, unavailable
from passerelle.connector.listeners.folder import FolderSpec, FolderWatcher
from passerelle.errors import ParseError, PasserelleError
from passerelle.observability.audit import AuditTrail
from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_sqlite import SQLiteAuditStore


class RecordingIntake:
    kind = "cda"
    max_bytes = 1 << 20

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.refused: list[str] = []

    async def receive(self, raw: bytes, *, size: int | None = None) -> Verdict:
        self.received.append(raw)
        if raw.startswith(b"bad"):
            return refused(ParseError("not XML"))
        if raw.startswith(b"later"):
            return unavailable()
        return Verdict(Outcome.ACCEPTED, len(self.received), "1.2.3")

    def refuse(self, error: PasserelleError) -> Verdict:
        self.refused.append(error.reason)
        return refused(error)

    def status(self, verdict: Verdict) -> str:
        return str(http_status(verdict))


def _spec(tmp_path: Path) -> FolderSpec:
    inbox = tmp_path / "in"
    return FolderSpec("test-folder", inbox, inbox / "processed", inbox / "failed", poll_interval_s=0.01)


async def test_each_outcome_has_its_destination(tmp_path: Path) -> None:
    intake = RecordingIntake()
    watcher = FolderWatcher(_spec(tmp_path), intake)
    inbox = watcher.spec.path
    inbox.mkdir()
    for name, body in (("a.xml", b"good"), ("b.xml", b"bad"), ("c.xml", b"later")):
        (inbox / name).write_bytes(body)
        (inbox / f"{name}.ready").touch()
    results = {r.name: r for r in await watcher.poll_once()}
    assert {n: r.destination for n, r in results.items()} == {"a.xml": "processed", "b.xml": "failed", "c.xml": "retry"}
    assert (inbox / "processed" / "a.xml").exists() and not (inbox / "a.xml.ready").exists()
    assert (inbox / "failed" / "b.xml.reason.txt").read_text() == "reason: parse\nstatus: 400\ndetail: not XML\n"
    assert (inbox / "c.xml").exists() and (inbox / "c.xml.ready").exists()


async def test_an_unreadable_file_is_refused_and_the_folder_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = folder._read
    threads: list[int] = []

    def read(path: Path, max_bytes: int) -> tuple[bytes, int]:
        threads.append(threading.get_ident())
        if path.name == "a.xml":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, max_bytes)

    monkeypatch.setattr(folder, "_read", read)
    store = SQLiteAuditStore(tmp_path / "audit.sqlite3")
    await store.open()
    try:
        intake = RecordingIntake()
        watcher = FolderWatcher(_spec(tmp_path), intake, audit=AuditTrail(store))
        inbox = watcher.spec.path
        inbox.mkdir()
        for name in ("a.xml", "b.xml"):
            (inbox / name).write_bytes(b"good")
            (inbox / f"{name}.ready").touch()
        await watcher.start()
        try:
            for _ in range(500):
                if (inbox / "processed" / "b.xml").exists():
                    break
                await asyncio.sleep(0.01)
        finally:
            await watcher.stop()
        assert (inbox / "processed" / "b.xml").exists()
        reason = (inbox / "failed" / "a.xml.reason.txt").read_text()
        assert reason == "reason: unreadable\nstatus: 400\ndetail: file cannot be read (Permission denied)\n"
        assert intake.refused == ["unreadable"] and intake.received == [b"good"]
        assert threads and threading.get_ident() not in threads  # read in worker threads, never on the loop
        [record] = await store.query(AuditQuery())
        assert (record.action.value, record.outcome.value, record.reason) == ("refusal", "refuse", "unreadable")
        assert record.actor == "folder:test-folder" and "a.xml" not in record.detail
    finally:
        await store.close()


async def test_symlinks_hidden_partial_and_unsettled_files(tmp_path: Path) -> None:
    intake = RecordingIntake()
    spec = _spec(tmp_path)
    watcher = FolderWatcher(dataclasses.replace(spec, settle_s=3600.0, suffixes=(".xml",)), intake)
    inbox = spec.path
    inbox.mkdir()
    target = tmp_path / "target.xml"
    target.write_bytes(b"good")
    (inbox / "link.xml").symlink_to(target)
    (inbox / ".hidden.xml").write_bytes(b"good")
    (inbox / "w.xml.part").write_bytes(b"good")
    (inbox / "notes.txt").write_bytes(b"good")
    (inbox / "young.xml").write_bytes(b"good")
    assert [r.name for r in await watcher.poll_once()] == ["link.xml"]
    assert [r.name for r in await watcher.poll_once()] == []  # young.xml is stable but not an hour old
    assert (inbox / "failed" / "link.xml").is_symlink() and target.read_bytes() == b"good"
    assert intake.refused == ["symlink"] and intake.received == []
