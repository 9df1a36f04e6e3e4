"""CDA intake with real parts: uvicorn on 127.0.0.1 (port 0), httpx, a SQLite journal file, a real folder.

Covers the B-CDA rows of docs/bad-input.md: XXE/DOCTYPE (with a canary socket proving zero outbound
connections), billion laughs, oversize (413, also chunked), wrong content type (415), not a CDA (422),
duplicate (200 same id) and conflict (409), encodings, deep nesting, processing instructions.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from passerelle.connector.intake.cda import CdaIntake, CdaIntakeSettings
from passerelle.connector.intake.replies import Outcome
from passerelle.connector.listeners.folder import FolderWatcher, cda_folder
from passerelle.queue.model import AppendResult, Inbound, Query, Row, State
from passerelle.queue.sqlite import SQLiteJournal
from tests.support.asgi_server import serving
from tests.support.cda_http import BEARER, documents_app
from tests.support.cda_samples import minimal_cda

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
XML = {"content-type": "application/hl7-cda+xml"}


def cda(uid: str = "1.2.250.1.999.8.1", *, title: str = "Compte rendu", extra: str = "") -> bytes:
    """The sample CDA with an xml-stylesheet instruction pointing at a dead address (never fetched)."""
    pi = '<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/evil.xsl"?>\n'
    return minimal_cda(uid, set_id="1.2.250.1.999.8", title=title, prolog=pi, after_title=extra)


@asynccontextmanager
async def serve(journal: SQLiteJournal, **settings: object) -> AsyncIterator[str]:
    app = documents_app(journal.append, lambda: NOW, **{"max_bytes": 256 * 1024, **settings})
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


def folder_watcher(settings: CdaIntakeSettings, accept) -> FolderWatcher:  # type: ignore[no-untyped-def]
    """The CDA folder as the composition root builds it."""
    intake = CdaIntake(accept, settings, channel="folder", sender=settings.folder_sender, clock=lambda: NOW)
    return FolderWatcher(cda_folder(settings), intake)


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A listening socket nobody should ever connect to."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def _no_connection(canary: socket.socket) -> bool:
    try:
        conn, _ = canary.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


async def _all_rows(journal: SQLiteJournal) -> list[Row]:
    return list(await journal.find(Query(limit=1000)))


async def test_accept_duplicate_conflict_with_a_real_journal(journal: SQLiteJournal) -> None:
    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        first = await client.post("/v1/documents", content=cda(), headers=XML)
        assert first.status_code == 202
        row_id = first.json()["journal_id"]
        row = await journal.get(row_id)
        assert row is not None and row.state is State.ACCEPTED and row.raw == cda() and row.kind == "cda"

        dup = await client.post("/v1/documents", content=cda(), headers=XML)
        assert dup.status_code == 200 and dup.json()["journal_id"] == row_id

        conflict = await client.post("/v1/documents", content=cda(title="Autre"), headers=XML)
        assert conflict.status_code == 409
        assert conflict.json()["reason"] == "duplicate_conflict"
    assert len(await _all_rows(journal)) == 1


async def test_xxe_and_doctype_never_connect_and_never_leak(journal: SQLiteJournal, canary: socket.socket) -> None:
    port = canary.getsockname()[1]
    attacks = [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/">]><r>&x;</r>'.encode(),
        f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/r.dtd"><r/>'.encode(),
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p.dtd"> %p;]><r/>'.encode(),
        cda().replace(
            b"<ClinicalDocument",
            f'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "http://127.0.0.1:{port}/">]>\n<ClinicalDocument'.encode(),
        ),
        # XInclude and schemaLocation to the canary: parsed as plain data, never fetched
        cda(
            "1.2.250.1.999.8.2",
            extra=f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="http://127.0.0.1:{port}/x"/>',
        ).replace(
            b'xmlns="urn:hl7-org:v3"',
            f'xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="urn:hl7-org:v3 http://127.0.0.1:{port}/CDA.xsd"'.encode(),
        ),
    ]
    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        statuses = []
        for body in attacks:
            r = await client.post("/v1/documents", content=body, headers=XML)
            statuses.append(r.status_code)
            assert "root:" not in r.text
    assert statuses[:5] == [400] * 5
    # the XInclude/schemaLocation document is a valid CDA: accepted, but nothing was fetched
    assert statuses[5] == 202
    await asyncio.sleep(0.05)
    assert _no_connection(canary)
    rows = await _all_rows(journal)
    assert len(rows) == 1


async def test_billion_laughs_deep_nesting_and_bad_encoding(journal: SQLiteJournal) -> None:
    ents = "".join(f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    laughs = f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "ha">{ents}]><r>&l9;</r>'.encode()
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    latin1_declared_utf8 = cda().replace(b"Compte rendu", "Compte rendu é".encode("latin-1"))
    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        r = await client.post("/v1/documents", content=laughs, headers=XML)
        assert r.status_code == 400 and r.json()["reason"] == "doctype"
        r = await client.post("/v1/documents", content=deep, headers=XML)
        assert r.status_code == 400 and r.json()["reason"] in ("depth", "xml")
        r = await client.post("/v1/documents", content=latin1_declared_utf8, headers=XML)
        assert r.status_code == 400 and r.json()["reason"] == "encoding"
        bom = b"\xef\xbb\xbf" + cda("1.2.250.1.999.8.3")
        r = await client.post("/v1/documents", content=bom, headers=XML)
        assert r.status_code == 202
    assert len(await _all_rows(journal)) == 1


async def test_oversize_is_413_with_length_and_chunked(journal: SQLiteJournal) -> None:
    big = cda(extra="<!-- " + "x" * 300_000 + " -->")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        r = await client.post("/v1/documents", content=big, headers=XML)
        assert r.status_code == 413 and r.json()["reason"] == "too_large"
        r = await client.post("/v1/documents", content=chunks(), headers=XML)
        assert r.status_code == 413
    assert await _all_rows(journal) == []


async def test_wrong_type_and_not_a_cda(journal: SQLiteJournal) -> None:
    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        r = await client.post("/v1/documents", content=cda(), headers={"content-type": "application/json"})
        assert r.status_code == 415
        r = await client.post("/v1/documents", content=b"<html xmlns='http://www.w3.org/1999/xhtml'/>", headers=XML)
        assert r.status_code == 422 and r.json()["reason"] == "not_cda"
        no_patient = cda().replace(b'<id root="1.2.250.1.213.1.4.10" extension="279035121518989"/>', b"")
        r = await client.post("/v1/documents", content=no_patient, headers=XML)
        assert r.status_code == 422 and r.json()["reason"] == "no_patient"
        no_template = cda().replace(b'<templateId root="1.2.250.1.213.1.1.1.1"/>', b"")
        r = await client.post("/v1/documents", content=no_template, headers=XML)
        assert r.status_code == 422 and r.json()["reason"] == "template"
        bad_body = cda().replace(
            b"<component><structuredBody/></component>",
            b'<component><nonXMLBody><text mediaType="application/pdf" representation="B64">%%%</text>'
            b"</nonXMLBody></component>",
        )
        r = await client.post("/v1/documents", content=bad_body, headers=XML)
        assert r.status_code == 422 and r.json()["reason"] == "body"
        not_xml = b"%PDF-1.4 not xml"
        r = await client.post("/v1/documents", content=not_xml, headers=XML)
        assert r.status_code == 400 and r.json()["reason"] == "xml"
    assert await _all_rows(journal) == []


async def test_every_corpus_cda_is_accepted(journal: SQLiteJournal, corpus_dir: Path) -> None:
    files = sorted((corpus_dir / "cda").rglob("*.xml"))
    async with (
        serve(journal, max_bytes=2 * 1024 * 1024) as url,
        httpx.AsyncClient(base_url=url, headers=BEARER) as client,
    ):
        for path in files:
            r = await client.post("/v1/documents", content=path.read_bytes(), headers=XML)
            assert r.status_code == 202, (path.name, r.text)
    assert len(await _all_rows(journal)) == len(files)


# --- watched folder -------------------------------------------------------------------------------------------


async def test_folder_watcher_takes_complete_files_only(journal: SQLiteJournal, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    settings = CdaIntakeSettings(folder=inbox, test_environment=True, poll_interval_s=0.05)
    watcher = folder_watcher(settings, journal.append)
    await watcher.start()
    await watcher.start()  # idempotent
    try:
        (inbox / "writing.xml.part").write_bytes(cda("1.2.250.1.999.9.9"))
        (inbox / "ok.xml").write_bytes(cda("1.2.250.1.999.9.1"))
        (inbox / "bad.xml").write_bytes(b"<!DOCTYPE r><r/>")
        for _ in range(200):
            if (inbox / "processed" / "ok.xml").exists() and (inbox / "failed" / "bad.xml").exists():
                break
            await asyncio.sleep(0.02)
        assert (inbox / "processed" / "ok.xml").read_bytes() == cda("1.2.250.1.999.9.1")
        reason = (inbox / "failed" / "bad.xml.reason.txt").read_text()
        assert "reason: doctype" in reason and "status: 400" in reason
        assert (inbox / "writing.xml.part").exists()  # never picked
    finally:
        await watcher.stop()
        await watcher.stop()  # idempotent
    assert not watcher.running
    rows = await _all_rows(journal)
    assert len(rows) == 1
    row = await journal.get(rows[0].id)
    assert row is not None and row.channel == "folder" and row.sender == "folder"


async def test_folder_size_stability_ready_marker_and_duplicates(journal: SQLiteJournal, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    settings = CdaIntakeSettings(folder=inbox, test_environment=True)
    watcher = folder_watcher(settings, journal.append)
    for d in (inbox, inbox / "processed", inbox / "failed"):
        d.mkdir(parents=True, exist_ok=True)
    (inbox / "a.xml").write_bytes(cda("1.2.250.1.999.9.2"))
    assert await watcher.poll_once() == []  # first sight: not yet stable
    done = await watcher.poll_once()
    assert [(r.name, r.status) for r in done] == [("a.xml", "202")]

    # a .ready marker makes the file complete at first sight, and is removed
    (inbox / "b.xml").write_bytes(cda("1.2.250.1.999.9.2"))
    (inbox / "b.xml.ready").write_bytes(b"")
    done = await watcher.poll_once()
    assert [(r.name, r.status, r.verdict.outcome) for r in done] == [("b.xml", "200", Outcome.DUPLICATE)]
    assert not (inbox / "b.xml.ready").exists() and (inbox / "processed" / "b.xml").exists()

    # same id, other bytes: failed with the conflict reason; same name twice gets a numbered name
    (inbox / "a.xml").write_bytes(cda("1.2.250.1.999.9.2", title="Autre"))
    (inbox / "a.xml.ready").touch()
    done = await watcher.poll_once()
    assert done[0].status == "409"
    assert (inbox / "failed" / "a.xml.reason.txt").read_text().startswith("reason: duplicate_conflict")

    # a file that grows between polls is not taken
    (inbox / "c.xml").write_bytes(cda("1.2.250.1.999.9.3")[:100])
    assert await watcher.poll_once() == []
    (inbox / "c.xml").write_bytes(cda("1.2.250.1.999.9.3"))
    assert await watcher.poll_once() == []
    assert [r.name for r in await watcher.poll_once()] == ["c.xml"]
    assert len(await _all_rows(journal)) == 2


async def test_folder_leaves_the_file_when_the_journal_is_down(tmp_path: Path) -> None:
    from passerelle.errors import QueueUnavailableError

    async def down(items: Sequence[Inbound]) -> list[AppendResult]:
        raise QueueUnavailableError("database locked")

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = folder_watcher(CdaIntakeSettings(folder=inbox, test_environment=True), down)
    (inbox / "a.xml").write_bytes(cda())
    (inbox / "a.xml.ready").touch()
    (inbox / "processed").mkdir()
    (inbox / "failed").mkdir()
    done = await watcher.poll_once()
    assert done[0].status == "503" and done[0].moved_to is None
    assert (inbox / "a.xml").exists() and (inbox / "a.xml.ready").exists()


async def test_slow_upload_is_408(journal: SQLiteJournal) -> None:
    body = cda("1.2.250.1.999.8.9")

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:100]
        await asyncio.sleep(1.0)
        yield body[100:]

    async with serve(journal, body_timeout_s=0.2) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        r = await client.post("/v1/documents", content=trickle(), headers=XML)
        assert r.status_code == 408 and r.json()["reason"] == "body_timeout"
    assert await _all_rows(journal) == []


async def test_journaled_cda_maps_to_a_qualified_document_in_the_worker(journal: SQLiteJournal) -> None:
    from passerelle.connector.dispatch.mapper import RowMapper
    from passerelle.connector.intake.hl7 import Hl7IntakeSettings
    from passerelle.mappings.document import Document, IdentityStatus

    async with serve(journal) as url, httpx.AsyncClient(base_url=url, headers=BEARER) as client:
        r = await client.post("/v1/documents", content=cda("1.2.250.1.999.8.7"), headers=XML)
        assert r.status_code == 202
    row = await journal.get(r.json()["journal_id"])
    assert row is not None
    mapper = RowMapper(journal, Hl7IntakeSettings(), test_environment=True, clock=lambda: NOW, oid_root="1.2.250.1.999")
    doc = await mapper.map(row)
    assert isinstance(doc, Document)
    assert doc.unique_id == "1.2.250.1.999.8.7"
    assert doc.patient.identity_status is IdentityStatus.QUALIFIED
    assert doc.provenance.channel == "http" and doc.provenance.journal_id == row.id


async def test_folder_oversize_and_symlinks(journal: SQLiteJournal, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    watcher = folder_watcher(CdaIntakeSettings(folder=inbox, test_environment=True, max_bytes=1000), journal.append)
    await watcher.start()
    await watcher.stop()  # creates the layout; polling is driven by hand below
    (inbox / "big.xml").write_bytes(cda(extra="<!-- " + "x" * 2000 + " -->"))
    (inbox / "big.xml.ready").touch()
    outside = tmp_path / "outside.xml"
    outside.write_bytes(cda("1.2.250.1.999.9.8"))
    (inbox / "link.xml").symlink_to(outside)
    (inbox / "link.xml.ready").touch()
    done = await watcher.poll_once()
    assert [(r.name, r.status) for r in done] == [("big.xml", "413"), ("link.xml", "400")]
    assert "reason: too_large" in (inbox / "failed" / "big.xml.reason.txt").read_text()
    # a symbolic link is never followed: the link itself goes to failed/, its target is untouched
    assert (inbox / "failed" / "link.xml").is_symlink() and outside.read_bytes() == cda("1.2.250.1.999.9.8")
    assert "reason: symlink" in (inbox / "failed" / "link.xml.reason.txt").read_text()
    assert await _all_rows(journal) == []
