"""An in-process gateway for integration tests: real journal file, real MLLP and HTTP sockets on
127.0.0.1 (port 0), real patient-space client — pointed at a real sandbox over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from passerelle.connector.app import Gateway, build_gateway
from passerelle.connector.settings import load_settings
from passerelle.queue.model import Query, Row, State


@contextlib.asynccontextmanager
async def running_gateway(data_dir: Path, space_url: str, **overrides: Any) -> AsyncIterator[tuple[Gateway, str]]:
    """Yield the gateway and its HTTP base URL; stop everything on exit."""
    settings = load_settings(
        None,
        overrides={
            "environment": "test",
            "data_dir": data_dir,
            "mllp.port": 0,
            "http.port": 0,
            "space.url": space_url,
            "worker.poll_interval_s": 0.05,
            **overrides,
        },
    )
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        yield gateway, f"http://127.0.0.1:{gateway.http.port}"
    finally:
        await gateway.stop()


async def wait_settled(gateway: Gateway, count: int, timeout: float = 30.0) -> list[Row]:
    """Wait until ``count`` rows are no longer accepted/retry (delivered, parked, refused, dead)."""
    deadline = asyncio.get_running_loop().time() + timeout
    rows: list[Row] = []
    while asyncio.get_running_loop().time() < deadline:
        rows = await gateway.journal.find(Query(limit=1000))
        if len(rows) >= count and all(r.state not in (State.ACCEPTED, State.RETRY) for r in rows):
            return rows
        await asyncio.sleep(0.1)
    return rows


async def sandbox_pushes(admin_url: str, ins: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(f"{admin_url}/pushes", params={"ins": ins})
        resp.raise_for_status()
        return list(resp.json())
