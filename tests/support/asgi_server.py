"""Serve an ASGI app with uvicorn on a socket bound to 127.0.0.1 port 0 before start (no race):
``serving`` runs it as a task on the test's loop, ``serving_in_thread`` on its own loop in a thread
(for sync tests, or when the app must keep answering while the test's loop blocks). Both yield the
port once uvicorn has started, and stop it on exit. ``config`` goes to :class:`uvicorn.Config`
(``lifespan``, ``http``, ``ssl_*``...)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _server(app: Any, config: dict[str, Any]) -> uvicorn.Server:
    options: dict[str, Any] = {"log_config": None, "log_level": "warning", "lifespan": "off", **config}
    return uvicorn.Server(uvicorn.Config(app, **options))


@contextlib.asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[int]:
    """Serve ``app`` on the running loop; yields its port."""
    sock = _bound_socket()
    server = _server(app, config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.contextmanager
def serving_in_thread(app: Any, *, start_timeout: float = 15.0, **config: Any) -> Iterator[int]:
    """Serve ``app`` in a thread with its own loop; yields its port."""
    sock = _bound_socket()
    server = _server(app, config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
