"""Start, stop and supervise the gateway's parts (ADR 0017).

* :meth:`Supervisor.start` starts the parts in order. When one fails, every part already started (and
  the one that failed: stops are idempotent) is stopped in reverse order, so ports, tasks and files are
  released, and :class:`StartupError` is raised with one PHI-free line naming the part.
* :meth:`Supervisor.stop` stops them in reverse order, once (a second call waits for the first); a
  part whose stop fails is logged and the others are still stopped.
* Every background task a part reports (the dispatch worker, the journal's committers, the folder
  watchers, the HTTP server, the gauges) is watched. One that ends while the gateway runs -- returning,
  raising or cancelled -- turns the gateway "not ready" with the reason (``/readyz`` 503), is logged and
  counted, and calls ``on_failure`` (the composition root then stops the service: it must not limp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


async def _nothing() -> None:
    return None


def _no_tasks() -> Sequence[asyncio.Task[Any]]:
    return ()


@dataclass(frozen=True)
class Part:
    """One startable part: idempotent ``start`` and ``stop``, and the background tasks to watch."""

    name: str
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing
    tasks: Callable[[], Sequence[asyncio.Task[Any]]] = field(default=_no_tasks)


class StartupError(Exception):
    """A part could not start; the message is one line meant for the operator."""


#: The phases, as /readyz names them when not ready.
NEW, STARTING, RUNNING, STOPPING, STOPPED = "not started", "starting", "running", "stopping", "stopped"


def describe(exc: BaseException) -> str:
    """One line for an exception met at start: an OS error's own text (address in use, permission
    denied...), else the exception's text. Start-up handles configuration, never patient data."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Owns the start order, the stop order and the watch over background tasks (module docstring)."""

    def __init__(self, on_failure: Callable[[str], None] | None = None) -> None:
        self.on_failure = on_failure
        self.failure = ""
        self._state = NEW
        self._started: list[Part] = []
        self._stopped: asyncio.Future[None] | None = None

    @property
    def running(self) -> bool:
        return self._state == RUNNING and not self.failure

    def readiness(self) -> str:
        """ "" when ready, else why not (the failure, or the phase: starting, stopping, stopped)."""
        if self.failure:
            return self.failure
        return "" if self._state == RUNNING else self._state

    async def start(self, parts: Sequence[Part]) -> None:
        if self._state != NEW:
            return
        self._state = STARTING
        for part in parts:
            self._started.append(part)  # stopped on failure too: its stop is idempotent
            try:
                await part.start()
            except BaseException as exc:
                await self.stop()
                if not isinstance(exc, Exception):
                    raise
                raise StartupError(f"{part.name}: {describe(exc)}") from None
            for task in part.tasks():
                self.watch(part.name, task)
        if self.failure:
            await self.stop()
            raise StartupError(self.failure)
        self._state = RUNNING
        log.info("gateway started", extra={"count": len(parts)})

    async def stop(self) -> None:
        if self._stopped is not None:
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        self._state = STOPPING
        cancelled = False
        try:
            while self._started:
                cancelled = await self._stop_part(self._started.pop()) or cancelled
        finally:
            self._state = STOPPED
            self._stopped.set_result(None)
        log.info("gateway stopped")
        if cancelled:
            raise asyncio.CancelledError

    async def _stop_part(self, part: Part) -> bool:
        """Stop one part; True when *we* were cancelled meanwhile (the rest is still stopped first)."""
        try:
            await part.stop()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                return True
            log.error("%s did not stop cleanly: its task was cancelled", part.name, extra={"component": part.name})
        except Exception as exc:  # noqa: BLE001 - one part failing to stop must not keep the others up
            log.error("%s did not stop cleanly: %s", part.name, describe(exc), extra={"component": part.name})
        return False

    def watch(self, name: str, task: asyncio.Task[Any]) -> None:
        """Watch one more background task of ``name``."""
        task.add_done_callback(lambda t: self._ended(name, t))

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._state not in (STARTING, RUNNING):
            return  # stopping: tasks are expected to end
        if task.cancelled():
            why = "cancelled"
        else:
            exc = task.exception()
            why = f"failed: {type(exc).__name__}" if exc is not None else "returned"
        reason = f"{name} stopped unexpectedly ({why})"
        if not self.failure:
            self.failure = reason
        log.error(reason, extra={"component": name})
        if self.on_failure is not None:
            with contextlib.suppress(Exception):
                self.on_failure(reason)
