"""An in-process gateway for integration tests: real journal file, real MLLP and HTTP sockets on
127.0.0.1 (port 0), real patient-space client — pointed at a real sandbox over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from passerelle.connector.app import Gateway, build_gateway
from passerelle.connector.parts import Clock, utcnow
from passerelle.connector.settings import load_settings
from passerelle.queue.model import Query, Row, State
from tests.support.waiting import poll

#: The HTTP identities every test gateway has (``http.tokens``), by role: name, token, intake sender.
TOKENS = {
    "read": ("reader", "test-read-token-0123456789", ""),
    "operate": ("operator", "test-operate-token-0123456789", ""),
    "intake": ("lab-http", "test-intake-token-0123456789", "LABO^HTTP"),
}
#: ``Authorization`` headers by role, for those identities.
AUTH = {role: {"Authorization": f"Bearer {token}"} for role, (_, token, _) in TOKENS.items()}


def token_settings(folder: Path) -> list[dict[str, Any]]:
    """``http.tokens`` for :data:`TOKENS`, their files written in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for role, (name, token, sender) in TOKENS.items():
        path = folder / f"{name}.token"
        path.write_text(token + "\n", encoding="utf-8")
        out.append({"name": name, "role": role, "token_file": path, **({"sender": sender} if sender else {})})
    return out


@contextlib.asynccontextmanager
async def running_gateway(
    data_dir: Path, space_url: str, *, clock: Clock = utcnow, **overrides: Any
) -> AsyncIterator[tuple[Gateway, str]]:
    """Yield the gateway and its HTTP base URL; stop everything on exit. The gateway has the HTTP
    identities of :data:`TOKENS` unless ``http.tokens`` is given, and reads the time from ``clock``."""
    settings = load_settings(
        None,
        overrides={
            "environment": "test",
            "data_dir": data_dir,
            "mllp.port": 0,
            "http.port": 0,
            "http.tokens": token_settings(data_dir.parent / f"{data_dir.name}-tokens"),
            "space.url": space_url,
            "worker.poll_interval_s": 0.05,
            **overrides,
        },
    )
    gateway = build_gateway(settings, clock=clock)
    await gateway.start()
    try:
        yield gateway, f"http://127.0.0.1:{gateway.http.port}"
    finally:
        await gateway.stop()


async def wait_settled(gateway: Gateway, count: int, timeout: float = 30.0) -> list[Row]:
    """Wait until ``count`` rows are no longer accepted/retry (delivered, parked, refused, dead)."""

    def settled(rows: list[Row]) -> bool:
        return len(rows) >= count and all(r.state not in (State.ACCEPTED, State.RETRY) for r in rows)

    return await poll(lambda: gateway.journal.find(Query(limit=1000)), settled, timeout)


async def post_cda(base: str, cda: bytes) -> None:
    """POST a CDA to the gateway at ``base`` as the intake identity; it must be accepted (202)."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = await client.post(
            "/v1/documents", content=cda, headers={"Content-Type": "application/xml", **AUTH["intake"]}
        )
    assert answer.status_code == 202, answer.text


async def sandbox_pushes(admin_url: str, ins: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(f"{admin_url}/pushes", params={"ins": ins})
        resp.raise_for_status()
        return list(resp.json())
