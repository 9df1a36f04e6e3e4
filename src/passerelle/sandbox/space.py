"""What the patient space does with a request: accept or refuse a push, delete, look up, search.

Functions over the store and plain values; the HTTP layer (``fhir.py``) only translates.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from passerelle.sandbox.bundle import RFC3986_SYSTEM, Submission, SubmittedDocument
from passerelle.sandbox.outcome import SpaceRefusal
from passerelle.sandbox.store import PatientState, SandboxStore, StoredDocument, new_id, now

PATIENT_STATUSES = ("ACTIF", "FERME", "INEXISTANT")


def split_token(value: str) -> tuple[str, str]:
    """A FHIR token ``system|value`` -> (system, value); a bare value has an empty system."""
    system, bar, code = value.partition("|")
    return (system, code) if bar else ("", system)


@dataclass(frozen=True)
class Actor:
    """Who reads: ``patient``, ``professional[:IdNat_PS]`` or ``representative[:name]`` (header X-Actor)."""

    kind: str
    ident: str = ""

    @classmethod
    def parse(cls, header: str | None) -> Actor:
        if not header:
            return cls("professional")
        kind, _, ident = header.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in ("patient", "professional", "representative"):
            raise ValueError("X-Actor must be patient, professional[:IdNat_PS] or representative[:name]")
        return cls(kind, ident.strip())

    def __str__(self) -> str:
        return f"{self.kind}:{self.ident}" if self.ident else self.kind


def visible_to(doc: StoredDocument, actor: Actor, patient: PatientState | None) -> bool:
    """The visibility rules of the DMP confidentiality codes (JDV_J08, 1.2.250.1.213.1.1.4.13).

    A professional does not see ``MASQUE_PS`` documents, except the author who deposited them; the
    patient does not see ``INVISIBLE_PATIENT`` ones; legal representatives exist only for a minor and
    do not see ``INVISIBLE_REPRESENTANTS_LEGAUX`` ones.
    """
    if actor.kind == "patient":
        return "INVISIBLE_PATIENT" not in doc.visibility
    if actor.kind == "representative":
        minor = patient is not None and patient.minor
        return minor and "INVISIBLE_REPRESENTANTS_LEGAUX" not in doc.visibility
    if "MASQUE_PS" in doc.visibility:
        return bool(actor.ident) and actor.ident == doc.author_idnat
    return True


def check_can_receive(state: PatientState, authors: set[str]) -> None:
    """Business refusals of a push, in the order a real space answers them."""
    if state.status == "INEXISTANT":
        raise SpaceRefusal("DMPNotFound", "no patient space for this INS")
    if state.status == "FERME":
        raise SpaceRefusal("DMPClosed", "the patient space is closed")
    if state.opposed:
        raise SpaceRefusal("PatientOpposed", "the patient opposed feeding the space")
    if authors & set(state.blocked_authors):
        raise SpaceRefusal("AuthorBlocked", "the patient blocked this author")


def _entry(status: str, location: str) -> dict[str, Any]:
    return {"response": {"status": status, "location": location, "lastModified": now()}}


@dataclass
class _Plan:
    """What one push will write: new documents with their ids, duplicates, replacements, patches."""

    new_docs: list[SubmittedDocument]
    duplicates: dict[int, StoredDocument]
    ids: dict[int, str]
    set_id: str
    replaced_of: dict[int, StoredDocument | SubmittedDocument]
    patched: list[tuple[int, str]]


def accept_push(store: SandboxStore, state: PatientState, submission: Submission, actor: str) -> dict[str, Any]:
    """Store a submission in one transaction and build the ``transaction-response``.

    A document whose uniqueId is stored with the same hash is a duplicate (``200 OK``, nothing new
    stored); with another hash the whole push is refused ``UniqueIdConflict``. Raises
    :class:`SpaceRefusal`; nothing is stored then.
    """
    with store.transaction() as db:
        plan = _plan(store, state.ins, submission)
        if plan.new_docs:
            store.insert_submission_set(db, plan.set_id, state.ins, submission.submission_set)
        stored, supersede = _store_new(store, db, state, plan, actor)
        for doc_id in supersede + [target for _, target in plan.patched]:
            store.set_status(db, doc_id, "superseded")
        for existing in plan.duplicates.values():
            store.add_trace(db, state.ins, actor, "push", existing.id, "duplicate (already stored)")
    return _response(submission, stored, plan.duplicates, plan.set_id, state.ins, dict(plan.patched))


def _plan(store: SandboxStore, ins: str, submission: Submission) -> _Plan:
    duplicates: dict[int, StoredDocument] = {}
    for doc in submission.documents:
        existing = store.document_by_unique_id(doc.unique_id)
        if existing is None:
            continue
        if existing.content_hash != doc.content_hash or existing.patient_ins != ins:
            raise SpaceRefusal("UniqueIdConflict", "this uniqueId is already stored with other content")
        duplicates[doc.entry_index] = existing
    new_docs = [d for d in submission.documents if d.entry_index not in duplicates]
    set_id = next(iter(duplicates.values())).submission_set_id if not new_docs else new_id()
    in_bundle = {d.unique_id: d for d in new_docs}
    ids = {d.entry_index: new_id() for d in new_docs}
    replaced_of = {d.entry_index: _find_replaced(store, ins, d, in_bundle) for d in new_docs if d.replaces is not None}
    by_resource_id = {str(d.resource.get("id")): d for d in new_docs if d.resource.get("id")}
    patched: list[tuple[int, str]] = []
    for entry_index, target_id in submission.patches:
        target_doc = store.document(target_id)
        if target_doc is not None and target_doc.patient_ins == ins:
            patched.append((entry_index, target_doc.id))
        elif target_id in by_resource_id:
            patched.append((entry_index, ids[by_resource_id[target_id].entry_index]))
        else:
            raise SpaceRefusal("UnknownReplacedDocument", "the patched DocumentReference is not in the space")
    return _Plan(new_docs, duplicates, ids, set_id, replaced_of, patched)


def _store_new(
    store: SandboxStore, db: sqlite3.Connection, state: PatientState, plan: _Plan, actor: str
) -> tuple[dict[int, StoredDocument], list[str]]:
    """Insert the new documents; returns them by entry index and the ids they supersede."""
    stored: dict[int, StoredDocument] = {}
    supersede: list[str] = []
    created = now()
    for doc in plan.new_docs:
        doc_id = plan.ids[doc.entry_index]
        target = plan.replaced_of.get(doc.entry_index)
        replaces_id = None
        if isinstance(target, StoredDocument):
            replaces_id = target.id
        elif isinstance(target, SubmittedDocument):
            replaces_id = plan.ids[target.entry_index]
        if replaces_id is not None:
            supersede.append(replaces_id)
        binary_id = new_id()
        row = StoredDocument(
            id=doc_id,
            unique_id=doc.unique_id,
            patient_ins=state.ins,
            status="current",
            content_hash=doc.content_hash,
            size=doc.size,
            title=doc.title,
            content_type=doc.content_type,
            author_idnat=doc.author_idnat,
            author_org=doc.author_org,
            visibility=doc.visibility,
            binary_id=binary_id,
            submission_set_id=plan.set_id,
            replaces_id=replaces_id,
            created_at=created,
            updated_at=created,
            resource=_stored_resource(doc, doc_id, binary_id, state, target, replaces_id),
        )
        store.insert_document(db, row, doc.content)
        stored[doc.entry_index] = row
        store.add_trace(db, state.ins, actor, "push", doc_id, "stored")
    return stored, supersede


def _find_replaced(
    store: SandboxStore, ins: str, doc: SubmittedDocument, in_bundle: dict[str, SubmittedDocument]
) -> StoredDocument | SubmittedDocument:
    ref = doc.replaces
    assert ref is not None
    target: StoredDocument | None = None
    if ref.unique_id is not None:
        if ref.unique_id in in_bundle and ref.unique_id != doc.unique_id:
            return in_bundle[ref.unique_id]
        target = store.document_by_unique_id(ref.unique_id)
    elif ref.document_id is not None:
        target = store.document(ref.document_id)
    if target is None or target.patient_ins != ins or target.status == "entered-in-error":
        raise SpaceRefusal("UnknownReplacedDocument", "the replaced document is not in the patient space")
    return target


def _stored_resource(
    doc: SubmittedDocument,
    doc_id: str,
    binary_id: str,
    state: PatientState,
    target: StoredDocument | SubmittedDocument | None,
    replaces_id: str | None,
) -> dict[str, Any]:
    resource = dict(doc.resource)
    resource["id"] = doc_id
    resource["subject"] = {"identifier": {"system": state.system, "value": state.ins}}
    content = [dict(c) for c in resource["content"]]
    content[0] = {**content[0], "attachment": {**content[0]["attachment"], "url": f"Binary/{binary_id}"}}
    resource["content"] = content
    if target is not None:
        others = [r for r in resource.get("relatesTo") or [] if r.get("code") != "replaces"]
        resource["relatesTo"] = [
            {
                "code": "replaces",
                "target": {
                    "reference": f"DocumentReference/{replaces_id}",
                    "identifier": {"system": RFC3986_SYSTEM, "value": target.unique_id},
                },
            },
            *others,
        ]
    return resource


def _response(
    submission: Submission,
    stored: dict[int, StoredDocument],
    duplicates: dict[int, StoredDocument],
    set_id: str,
    ins: str,
    patched: dict[int, str],
) -> dict[str, Any]:
    by_binary: dict[int, tuple[str, StoredDocument]] = {}
    for doc in submission.documents:
        if doc.entry_index in stored:
            by_binary[doc.binary_index] = ("201 Created", stored[doc.entry_index])
        else:
            by_binary[doc.binary_index] = ("200 OK", duplicates[doc.entry_index])
    entries: list[dict[str, Any]] = []
    for index, role in enumerate(submission.roles):
        if role == "submissionset":
            entries.append(_entry("201 Created" if stored else "200 OK", f"List/{set_id}"))
        elif role == "folder":
            entries.append(_entry("201 Created" if stored else "200 OK", f"List/{new_id()}"))
        elif role == "document":
            if index in stored:
                entries.append(_entry("201 Created", f"DocumentReference/{stored[index].id}"))
            else:
                entries.append(_entry("200 OK", f"DocumentReference/{duplicates[index].id}"))
        elif role == "binary":
            status, row = by_binary[index]
            entries.append(_entry(status, f"Binary/{row.binary_id}"))
        elif role == "patient":
            entries.append(_entry("200 OK", f"Patient/{ins}"))
        else:
            entries.append(_entry("200 OK", f"DocumentReference/{patched[index]}"))
    return {"resourceType": "Bundle", "id": new_id(), "type": "transaction-response", "entry": entries}


def delete_document(store: SandboxStore, unique_id: str, author: str | None) -> StoredDocument:
    """Logical deletion (``entered-in-error``) by the author or the author's organisation; idempotent."""
    doc = store.document_by_unique_id(unique_id)
    if doc is None:
        raise SpaceRefusal("UnknownDocument", "no document with this uniqueId in the space")
    if not author or author not in {doc.author_idnat, doc.author_org}:
        raise SpaceRefusal("NotAuthor", "only the document's author or its organisation may delete it")
    if doc.status != "entered-in-error":
        with store.transaction() as db:
            store.set_status(db, doc.id, "entered-in-error")
            store.add_trace(db, doc.patient_ins, f"professional:{author}", "delete", doc.id, "entered-in-error")
    return doc


def status_parameters(state: PatientState, author: str | None) -> dict[str, Any]:
    blocked = bool(author) and author in state.blocked_authors
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "status", "valueCode": state.status},
            {"name": "opposed", "valueBoolean": state.opposed},
            {"name": "authorBlocked", "valueBoolean": blocked},
            {"name": "minor", "valueBoolean": state.minor},
        ],
    }


def search_bundle(
    store: SandboxStore,
    state: PatientState | None,
    ins: str,
    actor: Actor,
    statuses: frozenset[str] | None,
    count: int | None,
    summary_count: bool,
) -> dict[str, Any]:
    """``searchset`` of the documents the actor may see; ``total`` counts all of them, ``_count`` pages."""
    docs = [d for d in store.documents_of(ins, statuses) if visible_to(d, actor, state)]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "id": new_id(), "type": "searchset", "total": len(docs)}
    if not summary_count:
        shown = docs if count is None else docs[:count]
        bundle["entry"] = [
            {
                "fullUrl": f"DocumentReference/{d.id}",
                "resource": d.as_resource(),
                "search": {"mode": "match"},
            }
            for d in shown
        ]
    store.record_trace(ins, str(actor), "search", None, f"{len(docs)} match(es)")
    return bundle
