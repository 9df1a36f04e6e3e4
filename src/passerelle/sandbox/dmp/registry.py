"""What the DMP services do with the sandbox's one store: ITI-41 storage, ITI-18 queries, ITI-57 updates.

ITI-41 documents land in the same patient spaces as ITI-65 pushes (``transport = dmp``); their
availability status is read from the shared columns: ``current`` = Approved (or Archived when the
``archived`` flag is set), ``superseded`` = Deprecated, ``entered-in-error`` = Deleted. A stored
document's entryUUID is ``urn:uuid:`` + its id, for both transports.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from dataclasses import dataclass

from lxml import etree

from passerelle.sandbox.dmp import ebrim, rules
from passerelle.sandbox.dmp.common import (
    RIM,
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
    STATUS_DEPRECATED,
    failure,
    q,
)
from passerelle.sandbox.dmp.rules import Lot
from passerelle.sandbox.outcome import SpaceRefusal
from passerelle.sandbox.space import check_can_receive
from passerelle.sandbox.store import PatientState, SandboxStore, StoredDocument, new_id, now

REPOSITORY_UNIQUE_ID = "1.2.250.1.213.4.1.1.1.2"
#: sandbox business refusals (docs/patient-space-api.md codes) -> RegistryError codes
_REFUSALS = {
    "DMPNotFound": "XDSUnknownPatientId",
    "DMPClosed": "DMPClosed",
    "PatientOpposed": "DMPPatientOpposed",
    "AuthorBlocked": "DMPAuthorBlocked",
}
_TRANSITIONS = {
    STATUS_APPROVED: {STATUS_DELETED, STATUS_ARCHIVED},
    STATUS_ARCHIVED: {STATUS_APPROVED, STATUS_DELETED},
    STATUS_DEPRECATED: {STATUS_DELETED},
}


def entry_uuid(doc: StoredDocument) -> str:
    return f"urn:uuid:{uuid.UUID(hex=doc.id)}"


def xds_status(doc: StoredDocument) -> str:
    if doc.status == "entered-in-error":
        return STATUS_DELETED
    if doc.status == "superseded":
        return STATUS_DEPRECATED
    return STATUS_ARCHIVED if doc.archived else STATUS_APPROVED


def by_entry_uuid(store: SandboxStore, value: str) -> StoredDocument | None:
    try:
        return store.document(uuid.UUID(value.removeprefix("urn:uuid:")).hex)
    except ValueError:
        return None


def check_space(state: PatientState, authors: set[str]) -> None:
    """The space's state refuses a submission the way the FHIR side does, with DMP codes."""
    try:
        check_can_receive(state, authors)
    except SpaceRefusal as refusal:
        raise failure(_REFUSALS[refusal.code], refusal.diagnostics) from refusal


@dataclass
class Stored:
    unique_ids: list[str]
    created: int


def store_lot(store: SandboxStore, state: PatientState, lot: Lot, actor: str) -> Stored:
    """Store every document of the lot (the signature included) in one transaction.

    Re-sending a uniqueId with identical bytes stores nothing new (idempotent); with other bytes the
    whole lot fails ``XDSNonIdenticalHash``. A lot whose documents are all registered already is a
    re-send: nothing is stored, not even its (new) signature entry, and its RPLC targets are not checked
    again. RPLC targets must be Approved documents of the patient.
    """
    entries = [*lot.documents, lot.signature]
    hashes = {e.id: hashlib.sha1(data, usedforsecurity=False).hexdigest() for e, data in entries}
    fresh = []
    for entry, _ in entries:
        existing = store.document_by_unique_id(lot.unique_id(entry))
        if existing is None:
            fresh.append(entry)
        elif existing.content_hash != _b64(hashes[entry.id]) or existing.patient_ins != state.ins:
            raise failure("XDSNonIdenticalHash", "this uniqueId is already registered with other content", entry.id)
    unique_ids = [lot.unique_id(e) for e, _ in entries]
    if not any(entry in fresh for entry, _ in lot.documents):
        return Stored(unique_ids, 0)
    targets = {source: _replaced(store, state, target) for source, target in lot.replacements.items()}
    set_id = new_id()
    with store.transaction() as db:
        if fresh:
            store.insert_submission_set(db, set_id, state.ins, _submission_set_resource(lot))
        for entry, data in entries:
            if entry not in fresh:
                continue
            doc = _document(lot, entry, data, state, set_id, targets.get(entry.id))
            store.insert_document(db, doc, data)
            store.save_xds_metadata(db, doc.id, etree.tostring(entry.element, encoding="unicode"))
            store.add_trace(db, state.ins, actor, "push", doc.id, "stored (ITI-41)")
            if doc.replaces_id is not None:
                store.set_status(db, doc.replaces_id, "superseded")
    return Stored(unique_ids, sum(1 for e in fresh if e is not lot.signature[0]))


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _replaced(store: SandboxStore, state: PatientState, target: str) -> StoredDocument:
    doc = by_entry_uuid(store, target)
    if doc is None or doc.status == "entered-in-error":
        raise failure("UnresolvedReferenceException", "the RPLC target entryUUID is not registered")
    if doc.patient_ins != state.ins:
        raise failure("XDSPatientIdDoesNotMatch", "the RPLC target belongs to another patient")
    if xds_status(doc) != STATUS_APPROVED:
        raise failure("XDSRegistryDeprecatedDocumentError", "the RPLC target is not Approved")
    return doc


def _submission_set_resource(lot: Lot) -> dict[str, object]:
    ss = lot.submission_set
    return {
        "resourceType": "List",
        "transport": "dmp",
        "uniqueId": lot.unique_id(ss),
        "sourceId": ss.external.get(ebrim.SS_SOURCE, ""),
        "date": ss.slot("submissionTime"),
    }


def _document(
    lot: Lot,
    entry: ebrim.RegistryObject,
    data: bytes,
    state: PatientState,
    set_id: str,
    replaces: StoredDocument | None,
) -> StoredDocument:
    doc_id = entry.id.removeprefix("urn:uuid:").replace("-", "") if entry.id.startswith("urn:uuid:") else new_id()
    visibility = frozenset(
        c.code for c in entry.codes_of(ebrim.DE_CONFIDENTIALITY) if c.coding_scheme == "1.2.250.1.213.1.1.4.13"
    )
    created = now()
    binary_id = new_id()
    digest = base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode("ascii")
    unique_id = lot.unique_id(entry)
    author = rules.author_person(entry)
    org = next(iter(sorted(rules.institutions(entry))), None)
    resource: dict[str, object] = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}"},
        "status": "current",
        "type": {
            "coding": [{"system": f"urn:oid:{c.coding_scheme}", "code": c.code} for c in entry.codes_of(ebrim.DE_TYPE)]
        },
        "subject": {"identifier": {"system": state.system, "value": state.ins}},
        "securityLabel": [
            {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": c}]} for c in sorted(visibility)
        ],
        "content": [
            {
                "attachment": {
                    "contentType": entry.attributes.get("mimeType", ""),
                    "url": f"Binary/{binary_id}",
                    "size": len(data),
                    "hash": digest,
                    "title": entry.title or "document",
                }
            }
        ],
    }
    return StoredDocument(
        id=doc_id,
        unique_id=unique_id,
        patient_ins=state.ins,
        status="current",
        content_hash=digest,
        size=len(data),
        title=entry.title or "document",
        content_type=entry.attributes.get("mimeType", ""),
        author_idnat=author,
        author_org=org,
        visibility=visibility,
        binary_id=binary_id,
        submission_set_id=set_id,
        replaces_id=replaces.id if replaces is not None else None,
        created_at=created,
        updated_at=created,
        resource=resource,
        transport="dmp",
    )


def version_of(store: SandboxStore, doc: StoredDocument) -> int:
    """The registered version of a document's entry (``VersionInfo/@versionName``; 1 until updated)."""
    stored = store.xds_metadata(doc.id)
    found = etree.fromstring(stored).find(q(RIM, "VersionInfo")) if stored else None
    name = found.get("versionName", "1") if found is not None else "1"
    return int(name) if name.isdigit() else 1


def set_version(element: etree._Element, version: int) -> None:
    """Add ``VersionInfo`` where ebRIM puts it: after Slot, Name and Description, before the rest."""
    info = etree.Element(q(RIM, "VersionInfo"), versionName=str(version))
    leading = {q(RIM, "Slot"), q(RIM, "Name"), q(RIM, "Description")}
    position = next((i for i, child in enumerate(element) if child.tag not in leading), len(element))
    element.insert(position, info)


def check_author(doc: StoredDocument, requester: tuple[str, str]) -> None:
    """Only the document's author changes it: its author person (the VIHF ``NameID``) or its author
    institution (``Identifiant_Structure``), as the FHIR side's ``X-Author`` rule."""
    structure, person = requester
    if not (structure == doc.author_org or (person and person == doc.author_idnat)):
        raise failure("DMPNotAuthor", "only the document's author (person or structure) may change it")


def leaf_class(store: SandboxStore, doc: StoredDocument, patient_id: str) -> etree._Element:
    """The registry's view of a document: its ExtrinsicObject with entryUUID (its classifications and
    identifiers pointing to it), status, version, hash and size."""
    stored = store.xds_metadata(doc.id)
    element = copy.deepcopy(etree.fromstring(stored)) if stored else etree.Element(q(RIM, "ExtrinsicObject"))
    submitted_id = element.get("id")
    for child in element.iter(q(RIM, "Classification"), q(RIM, "ExternalIdentifier")):
        for attribute in ("classifiedObject", "registryObject"):
            if child.get(attribute) == submitted_id:
                child.set(attribute, entry_uuid(doc))
    element.set("id", entry_uuid(doc))
    element.set("lid", entry_uuid(doc))
    element.set("status", xds_status(doc))
    element.set("objectType", ebrim.DOCUMENT_ENTRY_TYPE)
    element.set("mimeType", doc.content_type)
    for slot in list(element.findall(q(RIM, "Slot"))):
        if slot.get("name") in ("hash", "size", "repositoryUniqueId"):
            element.remove(slot)
    computed = {
        "hash": base64.b64decode(doc.content_hash).hex(),
        "size": str(doc.size),
        "repositoryUniqueId": REPOSITORY_UNIQUE_ID,
    }
    for position, (name, value) in enumerate(computed.items()):
        slot = etree.Element(q(RIM, "Slot"), name=name)
        etree.SubElement(etree.SubElement(slot, q(RIM, "ValueList")), q(RIM, "Value")).text = value
        element.insert(position, slot)
    if element.find(q(RIM, "VersionInfo")) is None:
        set_version(element, 1)
    if not stored:
        for scheme, value in ((ebrim.DE_PATIENT, patient_id), (ebrim.DE_UNIQUE, doc.unique_id)):
            etree.SubElement(
                element,
                q(RIM, "ExternalIdentifier"),
                id=f"urn:uuid:{uuid.uuid4()}",
                identificationScheme=scheme,
                registryObject=entry_uuid(doc),
                value=value,
            )
    return element


def update_status(
    store: SandboxStore, doc: StoredDocument, original: str, new: str, requester: tuple[str, str], actor: str
) -> None:
    """ITI-57 availability change, checked: current status, allowed transition, author for deletion.

    ``requester`` is the VIHF's (structure, person): only the document's author may delete it
    (:func:`check_author`).
    """
    current = xds_status(doc)
    if original != current:
        raise failure("XDSMetadataUpdateError", "OriginalStatus is not the document's current status")
    if new not in _TRANSITIONS.get(current, set()):
        raise failure("XDSMetadataUpdateError", "this availability status change is not allowed")
    if new == STATUS_DELETED:
        check_author(doc, requester)
    with store.transaction() as db:
        if new == STATUS_DELETED:
            store.set_status(db, doc.id, "entered-in-error")
        else:
            store.set_archived(db, doc.id, new == STATUS_ARCHIVED)
        store.add_trace(db, doc.patient_ins, actor, "update", doc.id, f"ITI-57 {new.rsplit(':', 1)[-1]}")
