"""One background task that runs a step again and again: the shape of the gateway's side tasks (journal
gauges, health checks, the space probe, retention)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence


class Periodic:
    """Runs ``step`` at once, then every ``interval_s`` after the end of the previous run (so runs never
    overlap); ``interval_s`` 0 runs it once and the task then waits, idle, until stopped.

    ``step`` handles its own expected failures: an exception it lets out ends the task, which the
    supervisor reports (``/readyz`` 503) and which stops the service. Idempotent start and stop.
    """

    def __init__(self, name: str, step: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def background_tasks(self) -> Sequence[asyncio.Task[None]]:
        return [self._task] if self._task is not None else []

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self.step()
            if self.interval_s <= 0:
                await asyncio.Event().wait()  # once only: stay alive (a returning task is a failure)
            await asyncio.sleep(self.interval_s)
