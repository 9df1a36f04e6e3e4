"""Group commit for the dispatcher's writes: many rows, one transaction.

Rows finishing at about the same time each :meth:`GroupCommit.submit` what they must write and wait;
one flush at a time runs, taking everything submitted meanwhile (up to ``max_batch`` items), so a
busy pipeline pays one commit (one fsync) for many rows while each caller still returns only once
the commit holding its item is done. A failed batch is retried item by item, so only the item at
fault (or every item, when the store is down) gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """``flush`` writes a batch durably (one transaction) or raises; see the module docstring."""

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[None]], *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Return once ``item`` is written; raise what its flush raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="group-commit")
        # A caller that is cancelled does not cancel the commit the others wait for.
        await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                await self._flush([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter of this batch is answered below
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                else:
                    await self._one_by_one(batch)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _one_by_one(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        for item, future in batch:
            try:
                await self._flush([item])
            except Exception as exc:  # noqa: BLE001 - handed to this item's waiter
                _fail(future, exc)
            else:
                if not future.done():
                    future.set_result(None)

    async def aclose(self) -> None:
        """Wait for the writes already submitted."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # its waiter re-raises it; nobody else must log "never retrieved"
