"""The FastAPI application factory: routers in, one app out (no lifespan: see :mod:`.server`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from fastapi import APIRouter, FastAPI, Request, Response

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def build_app(
    routers: Iterable[APIRouter], exception_handlers: Mapping[type[Exception], ExceptionHandler] | None = None
) -> FastAPI:
    app = FastAPI(title="Passerelle", version="0.1.0", docs_url="/docs", redoc_url=None)
    for router in routers:
        app.include_router(router)
    for exc_class, handler in (exception_handlers or {}).items():
        app.add_exception_handler(exc_class, handler)
    return app
