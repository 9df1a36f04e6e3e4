"""Wait for a condition instead of sleeping a fixed time: poll, with a deadline.

``until`` / ``until_sync`` fail the test (AssertionError) when the condition is still false at the
deadline; ``poll`` / ``poll_sync`` return the last value read either way, for the caller to assert on
with a message of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` (sync, cheap) on the running loop until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"condition not met in {timeout} s"
        await asyncio.sleep(interval)


def until_sync(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` from a sync test until it is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met in {timeout} s"
        time.sleep(interval)


async def poll(
    read: Callable[[], Awaitable[T]], done: Callable[[T], object], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """``await read()`` until ``done`` of its value is true or ``timeout`` has passed; the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = await read()
    while not done(value) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(interval)
        value = await read()
    return value


def poll_sync(read: Callable[[], T], done: Callable[[T], object], timeout: float = 30.0, interval: float = 0.2) -> T:
    """``read()`` until ``done`` of its value is true or ``timeout`` has passed; the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = read()
    return value
