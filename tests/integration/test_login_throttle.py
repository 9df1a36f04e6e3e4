"""Failed token attempts throttled per client address (ADR 0031, docs/bad-input.md B-HTTP-9), on a
running gateway over real sockets: 5 unknown tokens on the console's login page or as bearer tokens on
the API, and the address's next token attempts answer 429 with ``Retry-After`` — the right token
included, never looked at — until the window has passed; another address is not affected (a client
bound to 127.0.0.2); a successful login resets the address. The gateway's clock is moved by the test
(no waiting for the window), and the throttled attempts are read back from the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from passerelle.queue.audit import AuditQuery
from passerelle.queue.audit_sqlite import SQLiteAuditStore
from tests.support.console import csrf_of
from tests.support.gateway import AUTH, TOKENS, running_gateway

SPACE = "http://127.0.0.1:9/fhir"
WRONG = "wrong-token-0123456789-abcdef"


class Clock:
    """The gateway's time, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 9, 14, 27, 41, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def client(base: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is loopback on Linux)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, timeout=10, transport=transport)


async def attempt(browser: httpx.AsyncClient, token: str) -> httpx.Response:
    """One console login with ``token``: the login form (its CSRF token), then the POST."""
    page = await browser.get("/login")
    return await browser.post("/login", data={"csrf": csrf_of(page.text), "token": token, "next": "/"})


async def test_five_wrong_logins_then_the_right_token_is_429_until_the_window_passes(tmp_path: Path) -> None:
    clock = Clock()
    async with running_gateway(tmp_path / "gw", SPACE, clock=clock) as (gw, base):
        async with client(base) as browser, client(base, "127.0.0.2") as neighbour:
            assert [(await attempt(browser, WRONG)).status_code for _ in range(5)] == [401] * 5
            throttled = await attempt(browser, TOKENS["operate"][1])
            assert throttled.status_code == 429
            assert throttled.headers["retry-after"] == "300"
            assert "Trop de tentatives de connexion" in throttled.text
            assert "passerelle_session" not in throttled.headers.get("set-cookie", "")
            browser.cookies.set("passerelle_lang", "en")
            clock.now += timedelta(seconds=200)
            again = await attempt(browser, TOKENS["operate"][1])
            assert (again.status_code, again.headers["retry-after"]) == (429, "100")
            assert "Too many failed login attempts" in again.text
            # the API's tokens are the same secrets: the address may not guess them there either
            api = await browser.get("/v1/messages", headers=AUTH["read"])
            assert (api.status_code, api.headers["retry-after"]) == (429, "100")
            # no session was opened for the right token: no login in the audit trail yet
            assert [r for r in await gw.audit_store.query(AuditQuery(limit=1000)) if r.reason == "login"] == []
            # another address is not affected
            assert (await attempt(neighbour, TOKENS["operate"][1])).status_code == 303
            # the window has passed since the first failure: the right token opens a session
            clock.now += timedelta(seconds=100)
            assert (await attempt(browser, TOKENS["operate"][1])).status_code == 303
            assert (await browser.get("/")).status_code == 200
            metrics = (await browser.get("/metrics")).text
        before_stop = [r.detail for r in await gw.audit_store.query(AuditQuery(limit=1000))]
        journal_path = gw.settings.journal_path
    assert 'passerelle_http_auth_refusals_total{reason="throttled",surface="console"} 2.0' in metrics
    assert 'passerelle_http_auth_refusals_total{reason="throttled",surface="api"} 1.0' in metrics
    assert "console login_throttled first in minute 2026-03-09T14:27Z: POST /login" in before_stop
    store = SQLiteAuditStore(journal_path)
    await store.open()
    try:
        records = [r for r in await store.query(AuditQuery(limit=1000)) if r.reason == "access-refused"]
    finally:
        await store.close()
    throttled_records = sorted((r.actor, r.detail) for r in records if "throttled" in r.detail)
    assert throttled_records == [
        ("http:127.0.0.1", "api token_throttled first in minute 2026-03-09T14:31Z: GET /v1/messages"),
        ("http:127.0.0.1", "console login_throttled first in minute 2026-03-09T14:27Z: POST /login"),
        ("http:127.0.0.1", "console login_throttled first in minute 2026-03-09T14:31Z: POST /login"),
    ]
    assert not [r for r in records if WRONG[:12] in repr(r) or TOKENS["operate"][1][:12] in repr(r)]


async def test_a_successful_login_resets_the_address(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", SPACE, clock=Clock()) as (_gw, base):
        async with client(base) as browser:
            assert [(await attempt(browser, WRONG)).status_code for _ in range(4)] == [401] * 4
            assert (await attempt(browser, TOKENS["read"][1])).status_code == 303
            assert [(await attempt(browser, WRONG)).status_code for _ in range(4)] == [401] * 4
            # 8 failures within the window, but 4 since the login: still allowed
            assert (await attempt(browser, TOKENS["read"][1])).status_code == 303
            assert (await attempt(browser, WRONG)).status_code == 401
            assert (await attempt(browser, TOKENS["read"][1])).status_code == 303


async def test_unknown_bearer_tokens_throttle_the_api_and_the_login(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "gw", SPACE, clock=Clock()) as (_gw, base):
        async with client(base) as guesser, client(base, "127.0.0.2") as neighbour:
            guesses = [{"Authorization": f"Bearer {WRONG}-{n}"} for n in range(5)]
            assert [(await guesser.get("/v1/messages", headers=h)).status_code for h in guesses] == [401] * 5
            refused = await guesser.get("/v1/messages", headers=AUTH["read"])
            assert (refused.status_code, refused.headers["retry-after"]) == (429, "300")
            assert (await attempt(guesser, TOKENS["read"][1])).status_code == 429
            # no credential is not a guess: a request without one is answered as before
            assert (await guesser.get("/v1/messages")).status_code == 401
            assert (await neighbour.get("/v1/messages", headers=AUTH["read"])).status_code == 200


async def test_the_throttle_can_be_disabled(tmp_path: Path) -> None:
    overrides = {"http.login_throttle": {"enabled": False}}
    async with running_gateway(tmp_path / "gw", SPACE, clock=Clock(), **overrides) as (_gw, base):
        async with client(base) as browser:
            assert [(await attempt(browser, WRONG)).status_code for _ in range(6)] == [401] * 6
            assert (await attempt(browser, TOKENS["read"][1])).status_code == 303
