"""HTTP authentication over real sockets: every /v1 route and every console page refused without an
identity (401 + WWW-Authenticate for the API, the login page for the console) and with the wrong role
(403); served with a token of each role; every refusal counted and audited with the client address,
never the token; the legacy admin token as an operate identity; /metrics behind a token when asked."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.routing import APIRoute

from passerelle.mappings.samples.messages import build_sample_cda, root_only_oid, synthetic_patient
from passerelle.observability.audit import AuditAction
from passerelle.queue import Inbound, Settlement, State
from passerelle.queue.audit import AuditQuery
from tests.support.console import csrf_of, login
from tests.support.gateway import AUTH, TOKENS, running_gateway

UNKNOWN = {"Authorization": "Bearer not-a-token-anybody-holds"}
#: Roles each role's identity may act as.
MAY = {"read": {"read"}, "operate": {"read", "operate"}, "intake": {"intake"}}
#: Routes open without an identity: health checks, metrics (by default), the login page and its assets.
OPEN = {"/healthz", "/readyz", "/metrics", "/login", "/static/{name}", "/language/{lang}"}
#: FastAPI's own documentation routes (their switch and protection belong to the API docs setting).
DOCS = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}


def api_routes(routes: list[object]) -> list[APIRoute]:
    """Every APIRoute of an app, through included routers (FastAPI wraps them from 0.16x on)."""
    out: list[APIRoute] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += api_routes(list(inner.routes))
        elif isinstance(route, APIRoute):
            out.append(route)
    return out


def cda_body(seed: int = 5) -> bytes:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    patient = synthetic_patient(rng)
    return build_sample_cda(
        now=now, patient=patient, document_id=root_only_oid(rng), set_id=root_only_oid(rng), sender=None
    )


async def dead_row(gw) -> int:  # type: ignore[no-untyped-def]
    await gw.worker.stop()
    [res] = await gw.journal.append(
        [Inbound(raw=b"MSH|^~\\&|A|B|||||ORU^R01|1|P|2.5\r", channel="mllp", sender="A^B", kind="oru", lane="z")]
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    await gw.journal.claim("test", 10, 60, later)
    await gw.journal.settle(res.row_id, Settlement(State.DEAD, "deadline", patient_id="279035121518989"), later)
    return res.row_id


def api_calls(row_id: int) -> list[tuple[str, str, dict[str, object], str]]:
    """(method, path, request keywords, role needed) for every /v1 route."""
    xml = {"content": cda_body(), "headers": {"Content-Type": "application/xml"}}
    return [
        ("GET", "/v1/messages", {}, "read"),
        ("GET", f"/v1/messages/{row_id}", {}, "read"),
        ("POST", f"/v1/messages/{row_id}/replay", {"params": {"dry_run": "true"}}, "operate"),
        ("POST", "/v1/replay", {"json": {"states": ["dead"]}}, "operate"),
        ("POST", "/v1/documents", xml, "intake"),
    ]


def merged(kw: dict[str, object], auth: dict[str, str]) -> dict[str, object]:
    headers = {**kw.get("headers", {}), **auth}  # type: ignore[dict-item]
    return {**kw, "headers": headers}


async def test_every_route_declares_a_role_or_is_one_of_the_open_ones(tmp_path) -> None:
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir") as (gw, _):
        unguarded = []
        routes = api_routes(list(gw.http.app.routes))
        for route in routes:
            if route.path in OPEN | DOCS:
                continue
            names = {d.call.__name__ for d in route.dependant.dependencies if d.call is not None}
            if not names & {"require_read", "require_operate", "require_intake", "console_read", "console_operate"}:
                unguarded.append(f"{sorted(route.methods)} {route.path}")
        assert unguarded == []
        assert len(routes) > 15 and {r.path for r in routes} >= {"/", "/v1/messages", "/v1/documents", "/audit"}


async def test_api_routes_refuse_without_identity_or_role_and_serve_each_role(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    no_throttle = {"http.login_throttle": {"enabled": False}}  # an unknown token per route (B-HTTP-9 apart)
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **no_throttle) as (gw, base):
        row_id = await dead_row(gw)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for method, path, kw, needed in api_calls(row_id):
                anonymous = await client.request(method, path, **kw)  # type: ignore[arg-type]
                assert anonymous.status_code == 401, (method, path)
                assert anonymous.headers["www-authenticate"].startswith("Bearer"), path
                unknown = await client.request(method, path, **merged(kw, UNKNOWN))  # type: ignore[arg-type]
                assert unknown.status_code == 401 and 'error="invalid_token"' in unknown.headers["www-authenticate"]
                for role in ("read", "operate", "intake"):
                    answer = await client.request(method, path, **merged(kw, AUTH[role]))  # type: ignore[arg-type]
                    if needed in MAY[role]:
                        assert answer.status_code not in (401, 403), (method, path, role, answer.text)
                    else:
                        assert answer.status_code == 403, (method, path, role)
            metrics = (await client.get("/metrics")).text
        records = await gw.audit_store.query(AuditQuery(action=AuditAction.ADMIN, limit=1000))
    refusals = [r for r in records if r.reason == "access-refused"]
    # coalesced per address, class and minute: the first of each class written at once, with its route
    assert {r.detail.split(" first in minute ")[0] for r in refusals} == {
        "api missing_token",
        "api unknown_token",
        "api wrong_role",
    }
    assert {r.actor for r in refusals} == {"http:127.0.0.1"}
    assert refusals[0].detail.endswith(": GET /v1/messages")
    assert 'passerelle_http_auth_refusals_total{reason="missing",surface="api"} 5.0' in metrics
    assert 'passerelle_http_auth_refusals_total{reason="unknown",surface="api"} 5.0' in metrics
    assert 'passerelle_http_auth_refusals_total{reason="role",surface="api"} 8.0' in metrics
    secrets = [t for _, t, _ in TOKENS.values()] + ["not-a-token-anybody-holds"]
    seen = caplog.text + metrics + repr(records)
    assert not [s for s in secrets if s in seen]  # no token in logs, metrics or the audit trail


async def test_console_pages_need_a_session_with_the_role(tmp_path) -> None:
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir") as (gw, base):
        row_id = await dead_row(gw)
        pages = ["/", "/messages", f"/messages/{row_id}", f"/messages/{row_id}/raw", f"/messages/{row_id}/document",
                 f"/messages/{row_id}/metadata", "/dead-letters", "/audit"]  # fmt: skip
        posts = {f"/messages/{row_id}/reveal": "read", "/dead-letters/preview": "operate",
                 "/dead-letters/replay": "operate", "/logout": "read"}  # fmt: skip
        async with httpx.AsyncClient(base_url=base, timeout=10) as anonymous:
            for page in pages:
                answer = await anonymous.get(page)
                assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next="), page
            for page in posts:
                assert (await anonymous.post(page, data={"id": str(row_id)})).status_code == 303, page
            # A bearer token is not a console session (a browser cannot send one on navigation).
            assert (await anonymous.get("/", headers=AUTH["operate"])).status_code == 303
            intake = await login(anonymous, "intake")
            assert intake.status_code == 403 and "session" not in str(anonymous.cookies)
            wrong = await anonymous.post("/login", data={"csrf": "x", "token": TOKENS["read"][1]})
            assert wrong.status_code == 403  # the login form's CSRF token is checked too
        for role in ("read", "operate"):
            async with httpx.AsyncClient(base_url=base, timeout=10) as browser:
                answer = await login(browser, role)
                assert answer.status_code == 303
                cookie = answer.headers["set-cookie"]
                assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain HTTP
                for page in pages:
                    got = await browser.get(page)
                    assert got.status_code not in (303, 401, 403), (role, page)
                    assert got.headers["cache-control"] == "no-store"
                csrf = csrf_of((await browser.get("/")).text)
                for page, needed in posts.items():
                    data = {"csrf": csrf, "id": str(row_id)}
                    got = await browser.post(page, data=data)
                    if needed in MAY[role]:
                        assert got.status_code not in (401, 403), (role, page, got.text[:200])
                    else:
                        assert got.status_code == 403, (role, page)
                    if page == "/logout":
                        assert (await browser.get("/")).status_code == 303  # the session is gone
        forged = httpx.AsyncClient(base_url=base, timeout=10)
        async with forged:
            await login(forged, "operate")
            no_csrf = await forged.post("/dead-letters/preview", data={"id": str(row_id)})
            assert no_csrf.status_code == 403
        records = await gw.audit_store.query(AuditQuery(action=AuditAction.ADMIN, limit=1000))
    reasons = {(r.reason, r.actor) for r in records}
    assert ("login", "console:reader") in reasons and ("logout", "console:operator") in reasons
    assert ("download-raw", "console:reader") in reasons and ("reveal-ins", "console:operator") in reasons
    details = {r.detail.split(" first in minute ")[0] for r in records if r.reason == "access-refused"}
    assert {"console no_session", "console wrong_role", "console csrf", "console login_failed"} <= details


async def test_legacy_admin_token_is_an_operate_identity(tmp_path) -> None:
    token = tmp_path / "admin-token"
    token.write_text("legacy-admin-token\n")
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **{"http.admin_token_file": token}) as (
        gw,
        base,
    ):
        row_id = await dead_row(gw)
        admin = {"Authorization": "Bearer legacy-admin-token"}
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=admin) as client:
            assert (await client.get("/v1/messages")).status_code == 200
            assert (await client.post(f"/v1/messages/{row_id}/replay")).json()["count"] == 1
            assert (await client.post("/v1/documents", content=b"<x/>")).status_code == 403


@pytest.mark.parametrize("metrics_auth", [True, False])
async def test_metrics_behind_a_read_identity_when_asked(tmp_path, metrics_auth: bool) -> None:
    settings = {"http.metrics_auth": metrics_auth}
    async with running_gateway(tmp_path / "gw", "http://127.0.0.1:9/fhir", **settings) as (_, base):
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/metrics")).status_code == (401 if metrics_auth else 200)
            assert (await client.get("/metrics", headers=AUTH["read"])).status_code == 200
            assert (await client.get("/metrics", headers=AUTH["intake"])).status_code == (403 if metrics_auth else 200)
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
