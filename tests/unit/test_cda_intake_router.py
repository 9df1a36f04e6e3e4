"""POST /v1/documents through httpx's ASGI transport, with the in-memory journal or a failing fake."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest

from passerelle.connector.intake.replies import http_status, refused
from passerelle.errors import QueueUnavailableError
from passerelle.queue.memory import MemoryJournal
from passerelle.queue.model import AppendResult, Inbound, State
from tests.support.cda_http import BEARER, documents_app
from tests.support.cda_samples import minimal_cda

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
XML = {"content-type": "application/xml"}


def _client(accept, **settings: object) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    app = documents_app(accept, lambda: NOW, **settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=BEARER)


async def test_accepted_then_duplicate_then_conflict() -> None:
    journal = MemoryJournal()
    await journal.open()
    async with _client(journal.append) as client:
        r = await client.post("/v1/documents", content=minimal_cda(), headers=XML)
        assert r.status_code == 202
        body = r.json()
        assert body["status"] == "accepted" and body["document_id"] == "1.2.250.1.999.7.1"
        row = await journal.get(body["journal_id"])
        assert row is not None and row.kind == "cda" and row.channel == "http" and row.state is State.ACCEPTED
        assert row.raw == minimal_cda() and row.dedup_key == "cda:1.2.250.1.999.7.1"
        assert row.lane == "ins:279035121518989"

        again = await client.post("/v1/documents", content=minimal_cda(), headers={"content-type": "text/xml"})
        assert again.status_code == 200
        assert again.json() == {**body, "status": "duplicate"}

        other = await client.post("/v1/documents", content=minimal_cda(title="Autre"), headers=XML)
        assert other.status_code == 409
        assert other.headers["content-type"].startswith("application/problem+json")
        assert other.json()["reason"] == "duplicate_conflict"


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain", "multipart/form-data"])
async def test_wrong_content_type_is_415(ctype: str | None) -> None:
    calls: list[object] = []

    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        calls.append(items)
        return [AppendResult(1)]

    headers = {"content-type": ctype} if ctype else {}
    async with _client(accept) as client:
        r = await client.post("/v1/documents", content=minimal_cda(), headers=headers)
    assert r.status_code == 415
    assert r.json()["reason"] == "content_type"
    assert calls == []


async def test_problem_details_shape_and_no_phi() -> None:
    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        raise AssertionError("must not be called")

    async with _client(accept) as client:
        r = await client.post("/v1/documents", content=minimal_cda(ins="279035121518988"), headers=XML)
    assert r.status_code == 422
    problem = r.json()
    assert set(problem) == {"type", "title", "status", "detail", "reason"}
    assert problem["status"] == 422 and problem["reason"] == "identity_not_qualified"
    assert problem["type"] == "urn:passerelle:problem:identity_not_qualified"
    assert "27903512151898" not in r.text and "TEST" not in r.text


async def test_journal_failure_is_503_never_202() -> None:
    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        raise QueueUnavailableError("disk full")

    async with _client(accept) as client:
        r = await client.post("/v1/documents", content=minimal_cda(), headers=XML)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["reason"] == "queue_unavailable"


async def test_reply_only_after_accept_returned() -> None:
    order: list[str] = []

    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        order.append("commit")
        return [AppendResult(41)]

    async with _client(accept) as client:
        r = await client.post("/v1/documents", content=minimal_cda(), headers=XML)
        order.append("reply")
    assert order == ["commit", "reply"]
    assert r.json()["journal_id"] == 41


async def test_utf16_charset_and_body_are_415() -> None:
    journal = MemoryJournal()
    await journal.open()
    async with _client(journal.append) as client:
        r = await client.post(
            "/v1/documents", content=minimal_cda(), headers={"content-type": "application/xml; charset=utf-16"}
        )
        assert r.status_code == 415
        body16 = minimal_cda().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
        r = await client.post("/v1/documents", content=body16, headers=XML)
        assert r.status_code == 415 and r.json()["reason"] == "unsupported_encoding"


def status_for(error: Exception) -> int:
    return http_status(refused(error))


def test_status_table() -> None:
    from passerelle.errors import EncodingError, IdentityError, MappingError, ParseError, TooLargeError, ValidationError

    assert status_for(TooLargeError("x")) == 413
    assert status_for(ParseError("x", reason="doctype")) == 400
    assert status_for(EncodingError("x")) == 400
    assert status_for(EncodingError("x", reason="unsupported_encoding")) == 415
    assert status_for(ValidationError("x")) == 422
    assert status_for(MappingError("x")) == 422
    assert status_for(IdentityError("x")) == 422
    assert status_for(QueueUnavailableError("x")) == 503


async def test_unexpected_mapping_bug_is_a_500_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    import passerelle.connector.intake.cda as intake

    def boom(*args: object) -> None:
        raise RuntimeError("secret patient data in a foreign message")

    monkeypatch.setattr(intake, "validate_cda", boom)

    async def accept(items: Sequence[Inbound]) -> list[AppendResult]:
        raise AssertionError("must not be called")

    async with _client(accept) as client:
        r = await client.post("/v1/documents", content=minimal_cda(), headers=XML)
    assert r.status_code == 500 and r.json()["reason"] == "internal"
    assert "secret" not in r.text
