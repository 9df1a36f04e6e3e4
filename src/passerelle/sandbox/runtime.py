"""State shared by the sandbox's routers: configuration, store, fault injector, tokens."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from fastapi import Request
from fastapi.responses import JSONResponse

from passerelle.sandbox.config import SandboxConfig
from passerelle.sandbox.faults import FaultInjector
from passerelle.sandbox.fhir_models import FhirValidator
from passerelle.sandbox.outcome import simple_outcome
from passerelle.sandbox.store import SandboxStore

FHIR_JSON = "application/fhir+json"


def read_token(path: Path | None, what: str) -> str | None:
    """A secret from a file; an empty file is an error (no silent open door)."""
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{what} file {path} is empty")
    return token


@dataclass
class SandboxRuntime:
    config: SandboxConfig
    fhir_token: str | None
    admin_token: str | None
    faults: FaultInjector = field(default_factory=FaultInjector)
    #: validates each distinct FHIR element of the bundles once (fhir_models.py)
    validator: FhirValidator = field(default_factory=FhirValidator)
    #: the test CA(s) VIHF and XAdES certificates must be issued by (``dmp_ca_file``)
    dmp_cas: list[x509.Certificate] = field(default_factory=list)
    _store: SandboxStore | None = None

    @property
    def store(self) -> SandboxStore:
        # opened on first use so that in-process tests without a lifespan work too; closed by the lifespan
        if self._store is None:
            self._store = SandboxStore(self.config.database_path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def runtime_of(request: Request) -> SandboxRuntime:
    runtime: SandboxRuntime = request.app.state.sandbox
    return runtime


def bearer_ok(request: Request, expected: str | None) -> bool:
    return authorization_ok(request.headers.get("authorization", ""), expected)


def authorization_ok(header: str, expected: str | None) -> bool:
    """An ``Authorization`` header value carries the expected bearer token (or none is expected)."""
    if expected is None:
        return True
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def fhir_json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, media_type=FHIR_JSON, headers=headers)


def unauthorized() -> JSONResponse:
    return fhir_json(
        simple_outcome("error", "login", "a bearer token is required"),
        401,
        {"WWW-Authenticate": "Bearer"},
    )
