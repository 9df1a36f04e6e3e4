"""The FHIR endpoints of docs/patient-space-api.md: deletion, search, read. ITI-65 and the status lookup,
the two requests a gateway makes for every document, are answered by :mod:`.hot_paths`."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from passerelle.sandbox.bundle import INS_OID_PREFIX
from passerelle.sandbox.outcome import SpaceRefusal, refusal_outcome, simple_outcome
from passerelle.sandbox.runtime import bearer_ok, fhir_json, runtime_of, unauthorized
from passerelle.sandbox.space import Actor, delete_document, search_bundle, split_token, visible_to
from passerelle.sandbox.store import PatientState, StoredDocument

router = APIRouter(prefix="/fhir")

_STATUSES = frozenset({"current", "superseded", "entered-in-error"})


def _bad_request(diagnostics: str) -> JSONResponse:
    return fhir_json(simple_outcome("error", "invalid", diagnostics), 400)


def _refused(refusal: SpaceRefusal) -> JSONResponse:
    return fhir_json(refusal_outcome(refusal.code, refusal.diagnostics), refusal.http_status)


@router.get("/metadata")
async def capability_statement(request: Request) -> Response:
    """A minimal CapabilityStatement: what a client reads first to check the base URL and its credentials
    (the gateway's start-up probe). Behind the same bearer token as the other FHIR endpoints."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    return fhir_json(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "software": {"name": "Passerelle sandbox patient space"},
            "implementation": {"description": "Stand-in patient space (MHD ITI-65, status lookup)"},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {"type": "DocumentReference", "interaction": [{"code": "read"}, {"code": "search-type"}]},
                        {"type": "Binary", "interaction": [{"code": "read"}]},
                    ],
                    "interaction": [{"code": "transaction"}],
                    "operation": [{"name": "dmp-status", "definition": "urn:passerelle:sandbox:dmp-status"}],
                }
            ],
        }
    )


@router.get("/DocumentReference")
async def search_documents(request: Request) -> Response:
    """ITI-67-like search for one patient, with the visibility of the ``X-Actor``."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    params = request.query_params
    system, ins = split_token(params.get("patient.identifier", ""))
    if not ins or (system and not system.startswith(INS_OID_PREFIX)):
        return _bad_request("patient.identifier=urn:oid:<INS OID>|<INS> is required (INS OID 1.2.250.1.213.1.4.*)")
    try:
        actor = Actor.parse(request.headers.get("x-actor"))
    except ValueError as exc:
        return _bad_request(str(exc))
    statuses: frozenset[str] | None = None
    if params.get("status"):
        statuses = frozenset(s.strip() for s in params["status"].split(","))
        if not statuses <= _STATUSES:
            return _bad_request("status must be current, superseded or entered-in-error")
    count: int | None = None
    if params.get("_count"):
        try:
            count = int(params["_count"])
        except ValueError:
            return _bad_request("_count must be an integer")
        if count < 0:
            return _bad_request("_count must not be negative")
    store = runtime.store
    state = store.get_patient(ins)
    refused = _blocked(actor, state)
    if refused is not None:
        return refused
    bundle = search_bundle(store, state, ins, actor, statuses, count, params.get("_summary") == "count")
    return fhir_json(bundle)


@router.delete("/DocumentReference")
async def delete_by_identifier(request: Request) -> Response:
    """Conditional delete by uniqueId: the reference becomes ``entered-in-error``."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    _, unique_id = split_token(request.query_params.get("identifier", ""))
    if not unique_id:
        return _bad_request("identifier=urn:ietf:rfc:3986|urn:oid:<uniqueId> is required")
    try:
        delete_document(runtime.store, unique_id, request.headers.get("x-author"))
    except SpaceRefusal as refusal:
        return _refused(refusal)
    runtime.store.bump("documents_deleted")
    return fhir_json(simple_outcome("information", "informational", "the document is entered-in-error"))


def _reader(request: Request) -> Actor | JSONResponse:
    try:
        return Actor.parse(request.headers.get("x-actor"))
    except ValueError as exc:
        return _bad_request(str(exc))


def _blocked(actor: Actor, state: PatientState | None) -> JSONResponse | None:
    """A professional the patient blocked reads nothing of the space."""
    if state is not None and actor.kind == "professional" and actor.ident and actor.ident in state.blocked_authors:
        return _refused(SpaceRefusal("AuthorBlocked", "the patient blocked this professional"))
    return None


def _not_found(what: str) -> JSONResponse:
    return fhir_json(simple_outcome("error", "not-found", f"no {what} with this id"), 404)


def _readable(request: Request, doc: StoredDocument | None) -> tuple[Actor, StoredDocument] | JSONResponse:
    """The reader and the document it may read, or the answer refusing it (blocked, invisible, absent)."""
    actor = _reader(request)
    if isinstance(actor, JSONResponse):
        return actor
    state = runtime_of(request).store.get_patient(doc.patient_ins) if doc is not None else None
    refused = _blocked(actor, state)
    if refused is not None:
        return refused
    if doc is None or not visible_to(doc, actor, state):
        return _not_found("document")  # same answer whether absent or invisible
    return actor, doc


@router.get("/DocumentReference/{document_id}")
async def read_document(request: Request, document_id: str) -> Response:
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    found = _readable(request, runtime.store.document(document_id))
    if isinstance(found, JSONResponse):
        return found
    actor, doc = found
    runtime.store.record_trace(doc.patient_ins, str(actor), "read", doc.id, "DocumentReference")
    return fhir_json(doc.as_resource())


@router.get("/Binary/{binary_id}")
async def read_binary(request: Request, binary_id: str) -> Response:
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    store = runtime.store
    binary = store.binary(binary_id)
    found = _readable(request, store.document_by_binary(binary_id) if binary is not None else None)
    if isinstance(found, JSONResponse):
        return found
    actor, doc = found
    assert binary is not None
    store.record_trace(doc.patient_ins, str(actor), "read", doc.id, "Binary")
    content_type, data = binary
    body: dict[str, Any] = {
        "resourceType": "Binary",
        "id": binary_id,
        "contentType": content_type,
        "data": base64.b64encode(data).decode("ascii"),
    }
    return fhir_json(body)
