"""The sandbox application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from passerelle.sandbox.admin import router as admin_router
from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.dmp.certs import load_cas
from passerelle.sandbox.dmp.routes import PREFIX as DMP_PREFIX
from passerelle.sandbox.dmp.routes import router as dmp_router
from passerelle.sandbox.faults import FaultMiddleware
from passerelle.sandbox.fhir import router as fhir_router
from passerelle.sandbox.hot_paths import HotPaths
from passerelle.sandbox.pages import router as pages_router
from passerelle.sandbox.runtime import SandboxRuntime, read_token


def create_app(config: SandboxConfig) -> FastAPI:
    """A sandbox patient space serving ``/fhir`` (ITI-65 and the patient-space protocol), the DMP SOAP
    services under ``/si-dmp-server/v2/services``, ``/admin``, HTML pages and ``/healthz``.

    Token and CA files are read here (a missing or empty file fails now); the SQLite file is opened on first
    use and closed by the lifespan.
    """
    runtime = SandboxRuntime(
        config=config,
        fhir_token=read_token(config.require_token_file, "require_token"),
        admin_token=read_token(config.admin_token_file, "admin_token"),
        dmp_cas=load_cas(config.dmp_ca_file),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.store.counters()  # open the SQLite file now: a bad data_dir fails at start-up
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(title="Passerelle sandbox patient space", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sandbox = runtime
    app.include_router(fhir_router)
    app.include_router(dmp_router)
    app.include_router(admin_router)
    app.include_router(pages_router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(HotPaths, runtime=runtime)  # inside the fault injector: faults apply to it too
    app.add_middleware(FaultMiddleware, injector=runtime.faults, prefixes=("/fhir", DMP_PREFIX))
    return app
