"""The FHIR endpoints of docs/patient-space-api.md (ITI-65, deletion, status lookup, search, read)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from passerelle.sandbox.bundle import INS_OID_PREFIX, read_submission
from passerelle.sandbox.outcome import SpaceRefusal, refusal_outcome, simple_outcome
from passerelle.sandbox.runtime import bearer_ok, fhir_json, runtime_of, unauthorized
from passerelle.sandbox.space import (
    Actor,
    accept_push,
    check_can_receive,
    delete_document,
    search_bundle,
    status_parameters,
    visible_to,
)
from passerelle.sandbox.store import PatientState, StoredDocument

router = APIRouter(prefix="/fhir")

_STATUSES = frozenset({"current", "superseded", "entered-in-error"})


def _bad_request(diagnostics: str) -> JSONResponse:
    return fhir_json(simple_outcome("error", "invalid", diagnostics), 400)


def _refused(refusal: SpaceRefusal) -> JSONResponse:
    return fhir_json(refusal_outcome(refusal.code, refusal.diagnostics), refusal.http_status)


def _split_token(value: str) -> tuple[str, str]:
    """``system|value`` -> (system, value); a bare value has an empty system."""
    system, bar, code = value.partition("|")
    return (system, code) if bar else ("", system)


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


@router.post("")
@router.post("/")
async def provide_document_bundle(request: Request) -> Response:
    """ITI-65: store a transaction bundle, answer a ``transaction-response`` (entries in request order)."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    store = runtime.store
    body = await request.body()
    key = request.headers.get("idempotency-key") or None
    x_actor = request.headers.get("x-actor")
    request_hash = hashlib.sha256(body).hexdigest()
    if key is not None:
        cached = store.idempotent_response(key)
        if cached is not None and cached[0] == request_hash:
            store.record_push(
                ins=None,
                actor=x_actor or "unknown",
                idempotency_key=key,
                outcome="replayed",
                code=None,
                http_status=cached[1],
                unique_ids=[],
            )
            return Response(cached[2], status_code=cached[1], media_type="application/fhir+json")
    ins: str | None = None
    unique_ids: list[str] = []
    actor = x_actor or "unknown"
    try:
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise SpaceRefusal("InvalidBundle", "the body is not JSON") from exc
        submission = read_submission(raw)
        ins = submission.patient.value
        unique_ids = [d.unique_id for d in submission.documents]
        if x_actor is None:
            first = next(iter(sorted(submission.authors)), "")
            actor = f"professional:{first}" if first else "professional"
        state = store.patient_or_default(ins, submission.patient.system, runtime.config.auto_create_patients)
        check_can_receive(state, submission.authors)
        response = accept_push(store, state, submission, actor)
    except SpaceRefusal as refusal:
        store.record_push(
            ins=ins,
            actor=actor,
            idempotency_key=key,
            outcome="refused",
            code=refusal.code,
            http_status=refusal.http_status,
            unique_ids=unique_ids,
        )
        return _refused(refusal)
    created = sum(
        1
        for e in response["entry"]
        if e["response"]["location"].startswith("DocumentReference/") and e["response"]["status"].startswith("201")
    )
    store.record_push(
        ins=ins,
        actor=actor,
        idempotency_key=key,
        outcome="accepted" if created else "duplicate",
        code=None,
        http_status=200,
        unique_ids=unique_ids,
    )
    store.bump("documents_stored", created)
    payload = json.dumps(response)
    if key is not None:
        store.save_idempotent_response(key, request_hash, 200, payload)
    return Response(payload, status_code=200, media_type="application/fhir+json")


@router.get("/Patient/$dmp-status")
async def dmp_status(request: Request, identifier: str = "", author: str = "") -> Response:
    """≈ DMP TD0.2: the space's status, opposition, whether ``author`` is blocked, minority."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    system, ins = _split_token(identifier)
    if not ins or not system.startswith(INS_OID_PREFIX):
        return _bad_request("identifier=urn:oid:<INS OID>|<INS> is required (INS OID 1.2.250.1.213.1.4.*)")
    state = runtime.store.patient_or_default(ins, system, runtime.config.auto_create_patients)
    return fhir_json(status_parameters(state, author or None))


@router.get("/DocumentReference")
async def search_documents(request: Request) -> Response:
    """ITI-67-like search for one patient, with the visibility of the ``X-Actor``."""
    runtime = runtime_of(request)
    if not bearer_ok(request, runtime.fhir_token):
        return unauthorized()
    params = request.query_params
    system, ins = _split_token(params.get("patient.identifier", ""))
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
    _, unique_id = _split_token(request.query_params.get("identifier", ""))
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
