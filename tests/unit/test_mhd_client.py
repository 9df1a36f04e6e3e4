"""MHD client (adapters/mhd.py) against httpx.MockTransport: requests sent, answers classified."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from fhir.resources.R4B.bundle import Bundle

from passerelle.adapters.http import retry_after
from passerelle.adapters.mhd import MhdSpace, SpaceAuth, SpaceSettings
from passerelle.adapters.space import DeliveryOutcome, PatientSpace, SpaceState
from passerelle.errors import (
    IdentityError,
    RemoteAmbiguousError,
    RemoteCredentialError,
    RemoteEndpointError,
    RemoteRejectedError,
    RemoteTransientError,
)
from tests.support.space_docs import AUTHOR_ID, INS, deletion, document, patient, replacement

BASE = "http://space.test/fhir"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def settings(**changes: Any) -> SpaceSettings:
    return SpaceSettings(**{"url": BASE, "test_environment": True, **changes})


def make_space(handler: Handler, cfg: SpaceSettings | None = None, **kwargs: Any) -> MhdSpace:
    return MhdSpace(cfg or settings(), transport=httpx.MockTransport(handler), now=lambda: NOW, **kwargs)


def tx_response(request: httpx.Request, doc_status: str = "201 Created") -> httpx.Response:
    bundle = json.loads(request.content)
    entries = []
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        status = doc_status if kind == "DocumentReference" else "201 Created"
        entries.append({"response": {"status": status, "location": f"{kind}/1"}})
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def outcome(code: str, status: int) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "business-rule",
                    "details": {"coding": [{"system": "urn:passerelle:dmp-error-code", "code": code}]},
                }
            ],
        },
    )


def status_body(state: str = "ACTIF", **flags: bool) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "status", "valueCode": state}]
    for name in ("opposed", "authorBlocked", "minor"):
        params.append({"name": name, "valueBoolean": flags.get(name, False)})
    return {"resourceType": "Parameters", "parameter": params}


async def test_is_a_patient_space() -> None:
    space: PatientSpace = make_space(lambda r: httpx.Response(500))
    await space.aclose()
    await space.aclose()  # idempotent


async def test_provide_posts_a_valid_bundle_with_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return tx_response(request)

    space = make_space(handler)
    doc = document()
    receipt = await space.provide(doc)
    await space.aclose()
    assert receipt.outcome == DeliveryOutcome.CREATED
    assert receipt.unique_id == doc.unique_id and receipt.http_status == 200
    assert receipt.location == "DocumentReference/1"
    (request,) = seen
    assert request.method == "POST" and str(request.url) == BASE
    assert request.headers["Idempotency-Key"] == doc.unique_id
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert "Authorization" not in request.headers
    Bundle.model_validate(json.loads(request.content))


async def test_replay_is_already_stored_and_byte_identical() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return tx_response(request, "201 Created" if len(bodies) == 1 else "200 OK")

    space = make_space(handler)
    first = await space.provide(document())
    second = await space.provide(document())
    await space.aclose()
    assert first.outcome == DeliveryOutcome.CREATED
    assert second.outcome == DeliveryOutcome.ALREADY_STORED
    assert bodies[0] == bodies[1]


async def test_replacement_is_sent_with_relates_to() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return tx_response(request)

    space = make_space(handler)
    old = document()
    await space.provide(replacement(old, "1.2.250.1.999.2.3.2"))
    await space.aclose()
    ref = seen[0]["entry"][1]["resource"]
    assert ref["relatesTo"][0]["target"]["identifier"]["value"] == f"urn:oid:{old.unique_id}"


async def test_provide_refuses_a_deletion() -> None:
    space = make_space(lambda r: httpx.Response(500))
    with pytest.raises(ValueError):
        await space.provide(deletion(document()))
    await space.aclose()


async def test_test_ins_is_never_sent_to_production() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    space = make_space(handler, settings(test_environment=False))
    with pytest.raises(IdentityError):
        await space.provide(document())
    with pytest.raises(IdentityError):
        await space.status(patient(), AUTHOR_ID)
    with pytest.raises(IdentityError):
        await space.provide(document(patient=patient(ins="")))
    await space.aclose()
    assert calls == []


@pytest.mark.parametrize(
    ("response", "error", "reason"),
    [
        (
            httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
            RemoteAmbiguousError,
            "remote_ambiguous",
        ),
        (httpx.Response(200, content=b"<html>ok</html>"), RemoteAmbiguousError, "remote_ambiguous"),
        (httpx.Response(204), RemoteAmbiguousError, "remote_ambiguous"),
        (
            httpx.Response(201, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}),
            RemoteAmbiguousError,
            "remote_ambiguous",
        ),
        (outcome("UniqueIdConflict", 409), RemoteRejectedError, "unique_id_conflict"),
        (outcome("DMPClosed", 422), RemoteRejectedError, "space_closed"),
        (outcome("DMPNotFound", 422), RemoteRejectedError, "space_not_active"),
        (outcome("PatientOpposed", 422), RemoteRejectedError, "patient_opposed"),
        (outcome("AuthorBlocked", 403), RemoteRejectedError, "author_blocked"),
        (outcome("InvalidBundle", 400), RemoteRejectedError, "invalid_bundle"),
        (outcome("UnknownReplacedDocument", 422), RemoteRejectedError, "unknown_replaced_document"),
        (httpx.Response(422, content=b"nope"), RemoteRejectedError, "remote_rejected"),
        (httpx.Response(403), RemoteCredentialError, "remote_credentials"),
        (httpx.Response(401), RemoteCredentialError, "remote_credentials"),
        (httpx.Response(302, headers={"Location": "http://elsewhere.test/"}), RemoteEndpointError, "remote_endpoint"),
        (httpx.Response(408), RemoteTransientError, "remote_transient"),
        (httpx.Response(425), RemoteTransientError, "remote_transient"),
        (httpx.Response(429), RemoteTransientError, "remote_transient"),
        (httpx.Response(500), RemoteTransientError, "remote_transient"),
        (httpx.Response(503, content=b"maintenance"), RemoteTransientError, "remote_transient"),
    ],
)
async def test_provide_classification(response: httpx.Response, error: type[Exception], reason: str) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    space = make_space(handler)
    with pytest.raises(error) as info:
        await space.provide(document())
    await space.aclose()
    assert type(info.value) is error
    assert info.value.reason == reason  # type: ignore[attr-defined]
    assert len(calls) == 1  # one attempt: no retry, no redirect followed
    if isinstance(info.value, RemoteRejectedError):
        assert info.value.status == response.status_code
    assert INS not in str(info.value)


async def test_rejected_error_carries_the_remote_code() -> None:
    space = make_space(lambda r: outcome("PatientOpposed", 422))
    with pytest.raises(RemoteRejectedError) as info:
        await space.provide(document())
    await space.aclose()
    assert info.value.remote_code == "PatientOpposed"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        (None, None),
        ("999999999", 86400.0),
    ],
)
async def test_retry_after_is_honoured(header: str | None, expected: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    space = make_space(lambda r: httpx.Response(429, headers=headers))
    with pytest.raises(RemoteTransientError) as info:
        await space.provide(document())
    await space.aclose()
    assert info.value.retry_after == expected
    assert info.value.status == 429


def test_parse_retry_after_negative_and_nan() -> None:
    assert retry_after("-5", NOW) == 0.0
    assert retry_after("nan", NOW) is None
    assert retry_after("Sun, 22 Nov 2026 03:00:30 -0000", NOW) == 30.0  # "-0000": a naive date, read as UTC
    assert retry_after("Sun, 22 Nov 2026 03:00:30 GMT", NOW) == 30.0


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("reset"),
        httpx.ReadError("reset by peer"),
    ],
)
async def test_transport_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    space = make_space(handler)
    with pytest.raises(RemoteTransientError) as info:
        await space.provide(document())
    await space.aclose()
    assert type(info.value) is RemoteTransientError
    assert info.value.__cause__ is exc


async def test_oversized_answer_with_length_is_cut() -> None:
    space = make_space(lambda r: httpx.Response(200, content=b"x" * 5000), settings(max_response_bytes=1024))
    with pytest.raises(RemoteTransientError, match="cap"):
        await space.provide(document())
    await space.aclose()


async def test_oversized_streamed_answer_is_cut() -> None:
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while True:
            produced += 1
            yield b"y" * 512

    space = make_space(lambda r: httpx.Response(200, content=endless()), settings(max_response_bytes=2048))
    with pytest.raises(RemoteTransientError, match="cap"):
        await space.provide(document())
    await space.aclose()
    assert produced < 10


# --- status and delete ------------------------------------------------------------------------------


async def test_status_lookup() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=status_body("FERME", opposed=True, authorBlocked=True, minor=True))

    space = make_space(handler)
    status = await space.status(patient(), AUTHOR_ID)
    await space.aclose()
    assert status.state == SpaceState.FERME
    assert status.opposed and status.author_blocked and status.minor
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/fhir/Patient/$dmp-status"
    assert request.url.params["identifier"] == f"urn:oid:1.2.250.1.213.1.4.10|{INS}"
    assert request.url.params["author"] == AUTHOR_ID


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(200, json={"resourceType": "Bundle"}), RemoteAmbiguousError),
        (httpx.Response(200, content=b"not json"), RemoteAmbiguousError),
        (httpx.Response(503, headers={"Retry-After": "3"}), RemoteTransientError),
        (httpx.Response(401), RemoteCredentialError),
    ],
)
async def test_status_errors(response: httpx.Response, error: type[Exception]) -> None:
    space = make_space(lambda r: response)
    with pytest.raises(error):
        await space.status(patient(), AUTHOR_ID)
    await space.aclose()


async def test_delete() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]},
        )

    space = make_space(handler)
    old = document()
    receipt = await space.delete(deletion(old))
    await space.aclose()
    assert receipt.outcome == DeliveryOutcome.DELETED and receipt.unique_id == old.unique_id
    (request,) = seen
    assert request.method == "DELETE" and request.url.path == "/fhir/DocumentReference"
    assert request.url.params["identifier"] == f"urn:ietf:rfc:3986|urn:oid:{old.unique_id}"
    assert request.headers["X-Author"] == AUTHOR_ID


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (outcome("UnknownDocument", 404), RemoteRejectedError, "UnknownDocument"),
        (outcome("NotAuthor", 403), RemoteRejectedError, "NotAuthor"),
        (httpx.Response(200, json={"resourceType": "Bundle"}), RemoteAmbiguousError, ""),
        (httpx.Response(502), RemoteTransientError, ""),
    ],
)
async def test_delete_errors(response: httpx.Response, error: type[Exception], code: str) -> None:
    space = make_space(lambda r: response)
    with pytest.raises(error) as info:
        await space.delete(deletion(document()))
    await space.aclose()
    if code:
        assert info.value.remote_code == code  # type: ignore[attr-defined]


# --- OAuth2 -----------------------------------------------------------------------------------------


class FakeAuthServer:
    """Token endpoint + space in one handler; counts token grants and checks bearer tokens."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.grants = 0
        self.expires_in = expires_in
        self.valid: set[str] = set()
        self.reject_next = 0
        self.token_status = 200
        self.basic: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.basic.append(request.headers.get("Authorization", ""))
            assert b"grant_type=client_credentials" in request.content
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "invalid_client"})
            self.grants += 1
            token = f"tok-{self.grants}"
            self.valid.add(token)
            return httpx.Response(
                200, json={"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
            )
        auth = request.headers.get("Authorization", "")
        if self.reject_next:
            self.reject_next -= 1
            return httpx.Response(401)
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
            return httpx.Response(401)
        return httpx.Response(200, json=status_body())


def oauth_settings(tmp_path: Path, **changes: Any) -> SpaceSettings:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-from-file\n")
    base: dict[str, Any] = {
        "auth": SpaceAuth.OAUTH2,
        "token_url": "http://auth.test/token",
        "client_id": "passerelle",
        "client_secret_file": secret,
    }
    base.update(changes)
    return settings(**base)


async def test_oauth_token_is_fetched_once_and_cached(tmp_path: Path) -> None:
    server = FakeAuthServer()
    space = make_space(server, oauth_settings(tmp_path))
    for _ in range(3):
        await space.status(patient(), AUTHOR_ID)
    await space.aclose()
    assert server.grants == 1
    assert base64.b64decode(server.basic[0][6:]) == b"passerelle:s3cret-from-file"


async def test_oauth_token_refreshed_after_expiry(tmp_path: Path) -> None:
    clock = [1000.0]
    server = FakeAuthServer(expires_in=120)
    space = make_space(server, oauth_settings(tmp_path), monotonic=lambda: clock[0])
    await space.status(patient(), AUTHOR_ID)
    clock[0] += 60  # inside lifetime minus the 30 s margin
    await space.status(patient(), AUTHOR_ID)
    assert server.grants == 1
    clock[0] += 40  # past 120 - 30
    await space.status(patient(), AUTHOR_ID)
    await space.aclose()
    assert server.grants == 2


async def test_oauth_401_refreshes_once(tmp_path: Path) -> None:
    server = FakeAuthServer()
    space = make_space(server, oauth_settings(tmp_path))
    await space.status(patient(), AUTHOR_ID)
    server.reject_next = 1
    status = await space.status(patient(), AUTHOR_ID)
    assert status.state == SpaceState.ACTIF
    assert server.grants == 2
    server.reject_next = 2
    with pytest.raises(RemoteCredentialError):
        await space.status(patient(), AUTHOR_ID)
    await space.aclose()
    assert server.grants == 3  # one refresh per call, no loop


@pytest.mark.parametrize(
    ("token_status", "error"), [(401, RemoteCredentialError), (400, RemoteCredentialError), (503, RemoteTransientError)]
)
async def test_token_endpoint_failures(tmp_path: Path, token_status: int, error: type[Exception]) -> None:
    server = FakeAuthServer()
    server.token_status = token_status
    space = make_space(server, oauth_settings(tmp_path))
    with pytest.raises(error):
        await space.status(patient(), AUTHOR_ID)
    await space.aclose()


async def test_secret_from_environment_variable(tmp_path: Path) -> None:
    server = FakeAuthServer()
    cfg = oauth_settings(tmp_path, client_secret_file=None, client_secret_env="SPACE_SECRET")
    space = make_space(server, cfg, environ={"SPACE_SECRET": "from-env"})
    await space.status(patient(), AUTHOR_ID)
    await space.aclose()
    assert base64.b64decode(server.basic[0][6:]) == b"passerelle:from-env"


def test_missing_secret_fails_at_start(tmp_path: Path) -> None:
    cfg = oauth_settings(tmp_path, client_secret_file=None, client_secret_env="SPACE_SECRET")
    with pytest.raises(ValueError, match="secret"):
        MhdSpace(cfg, environ={})
    cfg = oauth_settings(tmp_path, client_secret_file=tmp_path / "absent")
    with pytest.raises(ValueError, match="secret"):
        MhdSpace(cfg, environ={})


@pytest.mark.parametrize(
    "changes",
    [
        {"auth": "oauth2"},
        {"auth": "oauth2", "token_url": "http://a/t", "client_id": "c"},
        {
            "auth": "oauth2",
            "token_url": "http://a/t",
            "client_id": "c",
            "client_secret_file": "/x",
            "client_secret_env": "X",
        },
        {"auth": "mtls"},
        {"url": "ftp://space"},
        {"client_secret": "literal"},
    ],
)
def test_settings_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SpaceSettings(**changes)


def test_mtls_with_unreadable_files_fails_at_start(tmp_path: Path) -> None:
    cfg = settings(auth=SpaceAuth.MTLS, client_cert_file=tmp_path / "c.pem", client_key_file=tmp_path / "k.pem")
    with pytest.raises(ValueError, match="TLS"):
        MhdSpace(cfg)


async def test_concurrent_calls_share_one_token_grant(tmp_path: Path) -> None:
    import asyncio

    server = FakeAuthServer()
    space = make_space(server, oauth_settings(tmp_path))
    results = await asyncio.gather(*(space.status(patient(), AUTHOR_ID) for _ in range(8)))
    await space.aclose()
    assert all(r.state == SpaceState.ACTIF for r in results)
    assert server.grants == 1


async def test_closed_client_refuses_calls() -> None:
    space = make_space(lambda r: httpx.Response(500))
    await space.aclose()
    with pytest.raises(RuntimeError):
        await space.status(patient(), AUTHOR_ID)


async def test_adapter_logs_never_carry_the_ins(caplog: pytest.LogCaptureFixture) -> None:
    responses = iter([httpx.Response(503), outcome("DMPClosed", 422), httpx.Response(401), httpx.Response(302)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("$dmp-status"):
            return httpx.Response(200, json=status_body())
        return next(responses, None) or tx_response(request)

    space = make_space(handler)
    with caplog.at_level("DEBUG"):
        await space.status(patient(), AUTHOR_ID)
        for _ in range(5):
            with contextlib.suppress(RemoteTransientError, RemoteRejectedError):
                await space.provide(document())
    await space.aclose()
    ours = [r for r in caplog.records if r.name.startswith("passerelle")]
    assert ours  # the adapter does log its outcomes
    for r in ours:
        assert INS not in r.getMessage() and "TESTNOM" not in r.getMessage()
