"""The three SOAP endpoints: ``/si-dmp-server/v2/services/{patients,repository,registry}``.

Each request is checked layer by layer (docs/sandbox.md) in a worker thread (parsing, schema
validation and signature checks are CPU work), then answered: a ``RegistryResponse`` (ITI-41 packaged
multipart/related like Apache CXF or plain SOAP, per ``dmp_answer``), an ``AdhocQueryResponse``, a
``PRPA_IN201308UV02``, or a SOAP 1.2 fault with HTTP 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from lxml import etree

from passerelle.sandbox.dmp import ebrim, mime, registry, rules, soap, td02, update, vihf, xades
from passerelle.sandbox.dmp.common import (
    HL7,
    LCM,
    QUERY,
    RIM,
    RS,
    XDSB,
    RegistryError,
    RegistryFailure,
    SoapFault,
    failure,
    q,
    sender,
)
from passerelle.sandbox.runtime import SandboxRuntime, runtime_of

PREFIX = "/si-dmp-server/v2/services"
TLS_PEER_EXTENSION = "passerelle.sandbox.tls_peer"
ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
TD02 = "urn:hl7-org:v3:PRPA_IN201307UV02"
RESPONSE_ACTIONS = {
    ITI41: f"{ITI41}Response",
    ITI18: f"{ITI18}Response",
    ITI57: "urn:ihe:iti:2010:UpdateDocumentSet-Response",
    TD02: "urn:hl7-org:v3:PRPA_IN201308UV02",
}
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

router = APIRouter(prefix=PREFIX)


@dataclass
class Call:
    """One request being served: the runtime, its checked envelope, packet and VIHF."""

    runtime: SandboxRuntime
    request: soap.Request
    packet: mime.Packet
    vihf: vihf.Vihf

    @property
    def actor(self) -> str:
        return f"structure:{self.vihf.structure_id}"


Handler = Callable[[Call], etree._Element]
ENDPOINTS: dict[str, dict[str, tuple[str, bool]]] = {
    # service -> Action -> (body element, MTOM packaging required)
    "repository": {ITI41: (q(XDSB, "ProvideAndRegisterDocumentSetRequest"), True)},
    "registry": {ITI18: (q(QUERY, "AdhocQueryRequest"), False), ITI57: (q(LCM, "SubmitObjectsRequest"), False)},
    "patients": {TD02: (q(HL7, "PRPA_IN201307UV02"), False)},
}


@router.post("/{service}")
async def soap_service(request: Request, service: str) -> Response:
    if service not in ENDPOINTS:
        return Response(status_code=404)
    runtime = runtime_of(request)
    body = await request.body()
    header = request.headers.get("content-type", "")
    peer = (request.scope.get("extensions") or {}).get(TLS_PEER_EXTENSION)
    return await asyncio.to_thread(_serve, runtime, service, header, body, peer)


def _serve(runtime: SandboxRuntime, service: str, header: str, body: bytes, peer: bytes | None) -> Response:
    config = runtime.config
    relates_to = None
    action = ""
    try:
        packet = mime.read_body(header, body, lenient=config.dmp_lenient)
        actions = {a: element for a, (element, _) in ENDPOINTS[service].items()}
        checked = soap.read_envelope(packet.envelope, actions, lenient=config.dmp_lenient)
        relates_to, action = checked.message_id, checked.action
        if ENDPOINTS[service][action][1] != packet.mtom:
            raise sender(mime.MIME_ERROR, "ITI-41 needs MTOM/XOP; the other operations plain application/soap+xml")
        token = vihf.read_vihf(checked.header, runtime.dmp_cas, peer, datetime.now(UTC))
        answer = _HANDLERS[action](Call(runtime, checked, packet, token))
    except SoapFault as fault:
        _record_refusal(runtime, action, fault.subcode or fault.code, 500)
        return Response(
            soap.fault_envelope(fault, relates_to), status_code=500, media_type=soap.plain(soap.FAULT_ACTION)
        )
    except RegistryFailure as refused:
        if not isinstance(refused, _Recorded):
            _record_refusal(runtime, action, refused.errors[0].code, 200)
        answer = registry_response(FAILURE, refused.errors)
    response_action = RESPONSE_ACTIONS[action]
    xml = soap.envelope(response_action, relates_to, answer)
    if action == ITI41 and config.dmp_answer == "multipart":
        content_type, payload = soap.multipart(xml, response_action)
        return Response(payload, status_code=200, headers={"content-type": content_type})
    return Response(xml, status_code=200, headers={"content-type": soap.plain(response_action)})


def _record_refusal(runtime: SandboxRuntime, action: str, code: str, status: int) -> None:
    if action == ITI41 or not action:
        runtime.store.record_push(
            ins=None, actor="dmp", idempotency_key=None, outcome="refused", code=code, http_status=status,
            unique_ids=[], transport="dmp",
        )  # fmt: skip


def registry_response(status: str, errors: list[RegistryError]) -> etree._Element:
    response = etree.Element(q(RS, "RegistryResponse"), nsmap={"rs": RS}, status=status)
    if errors:
        error_list = etree.SubElement(response, q(RS, "RegistryErrorList"))
        for error in errors:
            etree.SubElement(
                error_list,
                q(RS, "RegistryError"),
                errorCode=error.code,
                codeContext=error.context,
                location=error.location,
                severity=f"urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:{error.severity}",
            )
    return response


def _provide_and_register(call: Call) -> etree._Element:
    """ITI-41: MTOM documents, schema, metadata rules, VIHF context, XAdES, space state, storage."""
    config = call.runtime.config
    body = call.request.body
    resolved = mime.resolve_includes(body, call.packet)
    documents: dict[str, bytes] = {}
    for element in body.findall(q(XDSB, "Document")):
        if element not in resolved:
            raise failure(
                ebrim.METADATA_ERROR, "a Document must carry its bytes as an xop:Include", str(element.get("id"))
            )
        documents[str(element.get("id"))] = resolved[element]
    ebrim.validate(body, resolved, lenient=config.dmp_lenient)
    objects = body.find(f"{q(LCM, 'SubmitObjectsRequest')}/{q(RIM, 'RegistryObjectList')}")
    lot = rules.read_lot(ebrim.read_objects(objects), documents)
    vihf.check_context(call.vihf, lot.patient_id, lot.institutions)
    xades.verify(lot, call.runtime.dmp_cas, lenient=config.dmp_lenient)
    store = call.runtime.store
    state = store.patient_or_default(lot.ins, f"urn:oid:{lot.ins_oid}", config.auto_create_patients)
    authors = {a for e, _ in lot.documents if (a := rules.author_person(e))} | lot.institutions
    unique_ids = [lot.unique_id(e) for e, _ in lot.documents]
    try:
        registry.check_space(state, authors)
        stored = registry.store_lot(store, state, lot, call.actor)
    except RegistryFailure as refused:
        store.record_push(
            ins=lot.ins, actor=call.actor, idempotency_key=None, outcome="refused", code=refused.errors[0].code,
            http_status=200, unique_ids=unique_ids, transport="dmp",
        )  # fmt: skip
        raise _Recorded(refused.errors) from refused
    store.record_push(
        ins=lot.ins, actor=call.actor, idempotency_key=None, outcome="accepted" if stored.created else "duplicate",
        code=None, http_status=200, unique_ids=unique_ids, transport="dmp",
    )  # fmt: skip
    store.bump("documents_stored", stored.created)
    return registry_response(SUCCESS, [])


class _Recorded(RegistryFailure):
    """A failure already written to the push log (not recorded twice)."""


def _query_values(query: etree._Element, name: str) -> list[str]:
    values: list[str] = []
    for slot in query.findall(q(RIM, "Slot")):
        if slot.get("name") == name:
            for value in slot.iter(q(RIM, "Value")):
                text = (value.text or "").strip().removeprefix("(").removesuffix(")")
                values += [v.strip().strip("'") for v in text.split(",") if v.strip()]
    return values


def _stored_query(call: Call) -> etree._Element:
    """ITI-18: GetDocuments (uniqueId or entryUUID) and FindDocuments (patient + status)."""
    body = call.request.body
    ebrim.validate(body, {}, lenient=call.runtime.config.dmp_lenient)
    query = body.find(q(RIM, "AdhocQuery"))
    option = body.find(q(QUERY, "ResponseOption"))
    return_type = option.get("returnType") if option is not None else "ObjectRef"
    store = call.runtime.store
    patient = call.vihf.resource_id
    ins = patient.split("^", 1)[0]
    assert query is not None
    if query.get("id") == GET_DOCUMENTS:
        wanted = _query_values(query, "$XDSDocumentEntryUniqueId")
        found = [store.document_by_unique_id(u) for u in wanted]
        found += [registry.by_entry_uuid(store, u) for u in _query_values(query, "$XDSDocumentEntryEntryUUID")]
        if not wanted and not _query_values(query, "$XDSDocumentEntryEntryUUID"):
            raise failure("XDSStoredQueryParamNumber", "GetDocuments needs $XDSDocumentEntryUniqueId or EntryUUID")
        docs = [d for d in found if d is not None and d.patient_ins == ins]
    elif query.get("id") == FIND_DOCUMENTS:
        patients = _query_values(query, "$XDSDocumentEntryPatientId")
        statuses = set(_query_values(query, "$XDSDocumentEntryStatus"))
        if len(patients) != 1 or not statuses:
            raise failure("XDSStoredQueryParamNumber", "FindDocuments needs one patient id and the statuses")
        vihf.check_context(call.vihf, patients[0], None)
        docs = [d for d in store.documents_of(ins) if registry.xds_status(d) in statuses]
    else:
        raise failure("XDSUnknownStoredQuery", "only GetDocuments and FindDocuments are served")
    store.record_trace(ins, call.actor, "search", None, f"ITI-18 {len(docs)} match(es)")
    response = etree.Element(q(QUERY, "AdhocQueryResponse"), nsmap={"query": QUERY, "rim": RIM}, status=SUCCESS)
    objects = etree.SubElement(response, q(RIM, "RegistryObjectList"))
    for doc in docs:
        if return_type == "LeafClass":
            objects.append(registry.leaf_class(store, doc, patient))
        else:
            etree.SubElement(objects, q(RIM, "ObjectRef"), id=registry.entry_uuid(doc))
    return response


def _update_document_set(call: Call) -> etree._Element:
    """ITI-57: availability status changes (delete, archive, unarchive) of registered documents, or,
    when the request carries new DocumentEntry versions, their metadata update (:mod:`.update`)."""
    body = call.request.body
    ebrim.validate(body, {}, lenient=call.runtime.config.dmp_lenient)
    metadata = ebrim.read_objects(body.find(q(RIM, "RegistryObjectList")))
    requester = (call.vihf.structure_id, call.vihf.subject)
    if metadata.entries:
        ss, patient_id = rules.read_update(metadata)
        vihf.check_context(call.vihf, patient_id, rules.institutions(ss))
        update.apply(call.runtime.store, metadata, ss, requester, call.actor)
        return registry_response(SUCCESS, [])
    if len(metadata.packages) != 1 or not metadata.associations:
        raise failure(ebrim.METADATA_ERROR, "ITI-57 carries one SubmissionSet and its associations")
    _status_changes(call, metadata, requester)
    return registry_response(SUCCESS, [])


def _status_changes(call: Call, metadata: ebrim.Metadata, requester: tuple[str, str]) -> None:
    ss = metadata.packages[0]
    patient_id = ss.external.get(ebrim.SS_PATIENT, "")
    vihf.check_context(call.vihf, patient_id, rules.institutions(ss))
    store = call.runtime.store
    for association in metadata.associations:
        if association.type != UPDATE_STATUS or association.source != ss.id:
            raise failure("XDSMetadataUpdateError", "only UpdateAvailabilityStatus from the SubmissionSet is supported")
        doc = registry.by_entry_uuid(store, association.target)
        if doc is None:
            raise failure("UnresolvedReferenceException", "the target entryUUID is not registered", association.id)
        if doc.patient_ins != patient_id.split("^", 1)[0]:
            raise failure("XDSPatientIdDoesNotMatch", "the target document belongs to another patient", association.id)
        original = (association.slots.get("OriginalStatus") or [""])[0]
        new = (association.slots.get("NewStatus") or [""])[0]
        registry.update_status(store, doc, original, new, requester, call.actor)


def _existence_test(call: Call) -> etree._Element:
    """TD0.2 against the space's state (see :mod:`passerelle.sandbox.dmp.td02`)."""
    query = td02.read_query(call.request.body)
    if not query.valid:
        return td02.answer(query, None, None)
    vihf.check_context(call.vihf, query.patient_id, None)
    config = call.runtime.config
    store = call.runtime.store
    state = store.patient_or_default(str(query.ins), f"urn:oid:{query.ins_root}", config.auto_create_patients)
    authorisation = td02.authorisation_of(state, call.vihf.subject, call.vihf.structure_id)
    if state.known:
        store.record_trace(state.ins, call.actor, "status", None, f"TD0.2 {state.status}")
    return td02.answer(query, state, authorisation)


_HANDLERS: dict[str, Handler] = {
    ITI41: _provide_and_register,
    ITI18: _stored_query,
    ITI57: _update_document_set,
    TD02: _existence_test,
}
