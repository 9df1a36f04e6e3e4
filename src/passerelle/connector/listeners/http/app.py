"""The FastAPI application factory: routers in, one app out (no lifespan: see :mod:`.server`)."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI


def build_app(routers: Iterable[APIRouter]) -> FastAPI:
    app = FastAPI(title="Passerelle", version="0.1.0", docs_url="/docs", redoc_url=None)
    for router in routers:
        app.include_router(router)
    return app
