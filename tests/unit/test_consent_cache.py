"""TTL cache for status lookups (consent/cache.py), clock injected."""

from __future__ import annotations

import asyncio

import pytest

from passerelle.consent import TTLCache


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_expiry() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(ttl_s=60, clock=clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.t += 59.9
    assert cache.get("a") == 1
    clock.t += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0


def test_eviction_oldest_first_and_invalidate() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=60, clock=Clock(), max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("b") == 2 and cache.get("c") == 3
    cache.invalidate("b")
    assert cache.get("b") is None
    cache.clear()
    assert len(cache) == 0


def test_zero_ttl_caches_nothing() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl_s=0, clock=Clock())
    cache.put("a", 1)
    assert cache.get("a") is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TTLCache(ttl_s=-1, clock=Clock())
    with pytest.raises(ValueError):
        TTLCache(ttl_s=1, clock=Clock(), max_entries=0)


async def test_get_or_fetch_shares_one_fetch_and_caches() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(ttl_s=30, clock=clock)
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "ACTIF"

    tasks = [asyncio.create_task(cache.get_or_fetch("p", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == ["ACTIF"] * 5
    assert calls == 1
    assert await cache.get_or_fetch("p", fetch) == "ACTIF"
    assert calls == 1
    clock.t += 31
    assert await cache.get_or_fetch("p", fetch) == "ACTIF"
    assert calls == 2


async def test_failed_fetch_is_not_cached_and_reaches_every_waiter() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl_s=30, clock=Clock())
    gate = asyncio.Event()

    async def failing() -> str:
        await gate.wait()
        raise ConnectionError("down")

    tasks = [asyncio.create_task(cache.get_or_fetch("p", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)

    async def ok() -> str:
        return "FERME"

    assert await cache.get_or_fetch("p", ok) == "FERME"
