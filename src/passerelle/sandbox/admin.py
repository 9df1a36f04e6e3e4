"""Sandbox administration (not part of the national protocol): space states, pushes, faults, stats."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from passerelle.sandbox.bundle import TEST_INS_SYSTEM
from passerelle.sandbox.faults import FaultSettings
from passerelle.sandbox.runtime import SandboxRuntime, bearer_ok, runtime_of
from passerelle.sandbox.store import PatientState


def require_admin(request: Request) -> SandboxRuntime:
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.admin_token):
        raise HTTPException(
            status_code=401, detail="admin bearer token required", headers={"WWW-Authenticate": "Bearer"}
        )
    return runtime


router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


class PatientUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ACTIF", "FERME", "INEXISTANT"] | None = None
    opposed: bool | None = None
    blocked_authors: list[str] | None = None
    minor: bool | None = None
    legal_representatives: list[str] | None = None
    system: str | None = None
    #: the TD0.2 authorisation answered to every professional (docs/sandbox.md); unset: derived
    authorisation: Literal["VALIDE", "EXPIRE", "NON_EXISTE", "INTERDIT"] | None = None


def patient_view(runtime: SandboxRuntime, state: PatientState) -> dict[str, Any]:
    return {
        "ins": state.ins,
        "system": state.system,
        "status": state.status,
        "opposed": state.opposed,
        "blocked_authors": state.blocked_authors,
        "minor": state.minor,
        "legal_representatives": state.legal_representatives,
        "authorisation": state.authorisation,
        "documents": runtime.store.document_counts(state.ins),
        "pushes": len(runtime.store.pushes(state.ins)),
    }


@router.put("/patients/{ins}")
def put_patient(ins: str, update: PatientUpdate, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    state = runtime.store.get_patient(ins) or PatientState(ins=ins, system=update.system or TEST_INS_SYSTEM)
    for name, value in update.model_dump(exclude_none=True, exclude={"system"}).items():
        setattr(state, name, value)
    runtime.store.save_patient(state)
    return patient_view(runtime, state)


@router.get("/patients")
def list_patients(request: Request) -> list[dict[str, Any]]:
    runtime = runtime_of(request)
    return [patient_view(runtime, s) for s in runtime.store.list_patients()]


@router.get("/patients/{ins}")
def get_patient(ins: str, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    state = runtime.store.get_patient(ins)
    if state is None:
        raise HTTPException(status_code=404, detail="no space for this INS")
    return patient_view(runtime, state)


@router.get("/patients/{ins}/traces")
def get_traces(ins: str, request: Request) -> list[dict[str, Any]]:
    return runtime_of(request).store.traces(ins)


@router.get("/pushes")
def get_pushes(request: Request, ins: str | None = None) -> list[dict[str, Any]]:
    return runtime_of(request).store.pushes(ins)


@router.put("/faults")
def put_faults(settings: FaultSettings, request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    runtime.faults.configure(settings)
    return {"faults": settings.model_dump()}


@router.get("/faults")
def get_faults(request: Request) -> dict[str, Any]:
    settings = runtime_of(request).faults.settings
    return {"faults": settings.model_dump() if settings else None}


@router.delete("/faults")
def delete_faults(request: Request) -> dict[str, Any]:
    runtime_of(request).faults.clear()
    return {"faults": None}


@router.get("/stats")
def get_stats(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    counters = runtime.store.counters()
    pushes = {k.removeprefix("pushes_"): v for k, v in counters.items() if k.startswith("pushes_")}
    return {
        "pushes": sum(pushes.values()),
        "pushes_by_outcome": pushes,
        "stored": counters.get("documents_stored", 0),
        "deleted": counters.get("documents_deleted", 0),
        "refused": pushes.get("refused", 0),
        "faults_injected": dict(runtime.faults.injected),
    }
