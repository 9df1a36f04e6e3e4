"""The sandbox's own SQLite file (``sandbox.sqlite3``, WAL): spaces, documents, pushes, access traces.

One connection guarded by a lock: every call is a few short statements, made from the event loop or
a worker thread. The sandbox is a test and demo tool; this is not the gateway's journal.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The DMP visibility codes (JDV_J08 / TRE_A07 extension) a stored document may carry, and their code system.
VISIBILITY_SYSTEM_OID = "1.2.250.1.213.1.1.4.13"
VISIBILITY_CODES = frozenset({"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    ins TEXT PRIMARY KEY,
    system TEXT NOT NULL,
    status TEXT NOT NULL,
    opposed INTEGER NOT NULL DEFAULT 0,
    blocked_authors TEXT NOT NULL DEFAULT '[]',
    minor INTEGER NOT NULL DEFAULT 0,
    legal_representatives TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    unique_id TEXT NOT NULL UNIQUE,
    patient_ins TEXT NOT NULL,
    status TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    title TEXT NOT NULL,
    content_type TEXT NOT NULL,
    author_idnat TEXT,
    author_org TEXT,
    visibility TEXT NOT NULL,
    binary_id TEXT NOT NULL,
    submission_set_id TEXT NOT NULL,
    replaces_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_patient ON documents (patient_ins, created_at);
CREATE TABLE IF NOT EXISTS binaries (
    id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS submission_sets (
    id TEXT PRIMARY KEY,
    patient_ins TEXT NOT NULL,
    created_at TEXT NOT NULL,
    resource TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pushes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    patient_ins TEXT,
    actor TEXT NOT NULL,
    idempotency_key TEXT,
    outcome TEXT NOT NULL,
    code TEXT,
    http_status INTEGER NOT NULL,
    unique_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pushes_patient ON pushes (patient_ins, id);
CREATE TABLE IF NOT EXISTS traces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    patient_ins TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    document_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS traces_patient ON traces (patient_ins, id);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    http_status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS xds_metadata (
    document_id TEXT PRIMARY KEY,
    xml TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


_ADDED_COLUMNS = (
    ("documents", "transport", "TEXT NOT NULL DEFAULT 'mhd'"),
    ("documents", "archived", "INTEGER NOT NULL DEFAULT 0"),
    ("pushes", "transport", "TEXT NOT NULL DEFAULT 'mhd'"),
    ("patients", "authorisation", "TEXT"),
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class PatientState:
    ins: str
    system: str
    status: str = "ACTIF"
    opposed: bool = False
    blocked_authors: list[str] = field(default_factory=list)
    minor: bool = False
    legal_representatives: list[str] = field(default_factory=list)
    known: bool = True
    #: TD0.2 authorisation forced by the admin API (VALIDE, EXPIRE, NON_EXISTE, INTERDIT); None: derived
    authorisation: str | None = None


@dataclass
class StoredDocument:
    id: str
    unique_id: str
    patient_ins: str
    status: str
    content_hash: str
    size: int
    title: str
    content_type: str
    author_idnat: str | None
    author_org: str | None
    visibility: frozenset[str]
    binary_id: str
    submission_set_id: str
    replaces_id: str | None
    created_at: str
    updated_at: str
    resource: dict[str, Any]
    #: how it arrived: ``mhd`` (ITI-65) or ``dmp`` (ITI-41)
    transport: str = "mhd"
    #: archived through ITI-57 (the DMP's Archived availability status; FHIR status stays current)
    archived: bool = False

    def as_resource(self) -> dict[str, Any]:
        """The DocumentReference as served: the stored one with the current status."""
        resource = dict(self.resource)
        resource["status"] = self.status
        resource["meta"] = {**(resource.get("meta") or {}), "lastUpdated": self.updated_at}
        return resource


_DOC_COLUMNS = (
    "id, unique_id, patient_ins, status, content_hash, size, title, content_type, author_idnat, "
    "author_org, visibility, binary_id, submission_set_id, replaces_id, created_at, updated_at, resource, "
    "transport, archived"
)


def _document(row: sqlite3.Row) -> StoredDocument:
    values = dict(row)
    values["visibility"] = frozenset(json.loads(values["visibility"]))
    values["resource"] = json.loads(values["resource"])
    values["archived"] = bool(values["archived"])
    return StoredDocument(**values)


def _patient(row: sqlite3.Row) -> PatientState:
    return PatientState(
        ins=row["ins"],
        system=row["system"],
        status=row["status"],
        opposed=bool(row["opposed"]),
        blocked_authors=json.loads(row["blocked_authors"]),
        minor=bool(row["minor"]),
        legal_representatives=json.loads(row["legal_representatives"]),
        authorisation=row["authorisation"],
    )


class SandboxStore:
    """Everything the sandbox remembers. Methods are synchronous and short."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        self._closed = False
        self._depth = 0

    def _add_missing_columns(self) -> None:
        """Columns added after the first release: a data_dir from an older sandbox keeps working."""
        for table, column, declaration in _ADDED_COLUMNS:
            names = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a transaction opened inside another joins it (one commit for both)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    # --- patients -----------------------------------------------------------------------------------

    def get_patient(self, ins: str) -> PatientState | None:
        rows = self._query("SELECT * FROM patients WHERE ins = ?", (ins,))
        return _patient(rows[0]) if rows else None

    def list_patients(self) -> list[PatientState]:
        return [_patient(r) for r in self._query("SELECT * FROM patients ORDER BY created_at, ins")]

    def save_patient(self, state: PatientState) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO patients (ins, system, status, opposed, blocked_authors, minor, "
                "legal_representatives, created_at, authorisation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (ins) DO UPDATE SET status = excluded.status, opposed = excluded.opposed, "
                "blocked_authors = excluded.blocked_authors, minor = excluded.minor, "
                "legal_representatives = excluded.legal_representatives, authorisation = excluded.authorisation",
                (
                    state.ins,
                    state.system,
                    state.status,
                    int(state.opposed),
                    json.dumps(state.blocked_authors),
                    int(state.minor),
                    json.dumps(state.legal_representatives),
                    now(),
                    state.authorisation,
                ),
            )
        state.known = True

    def patient_or_default(self, ins: str, system: str, auto_create: bool) -> PatientState:
        """The stored space, or a new ``ACTIF`` one (auto-create), or an unsaved ``INEXISTANT`` one."""
        state = self.get_patient(ins)
        if state is not None:
            return state
        if auto_create:
            state = PatientState(ins=ins, system=system)
            self.save_patient(state)
            return state
        return PatientState(ins=ins, system=system, status="INEXISTANT", known=False)

    def document_counts(self, ins: str) -> dict[str, int]:
        rows = self._query("SELECT status, count(*) AS n FROM documents WHERE patient_ins = ? GROUP BY status", (ins,))
        return {r["status"]: r["n"] for r in rows}

    # --- documents ----------------------------------------------------------------------------------

    def document_by_unique_id(self, unique_id: str) -> StoredDocument | None:
        rows = self._query(f"SELECT {_DOC_COLUMNS} FROM documents WHERE unique_id = ?", (unique_id,))
        return _document(rows[0]) if rows else None

    def document(self, document_id: str) -> StoredDocument | None:
        rows = self._query(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ?", (document_id,))
        return _document(rows[0]) if rows else None

    def documents_of(self, ins: str, statuses: frozenset[str] | None = None) -> list[StoredDocument]:
        rows = self._query(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE patient_ins = ? ORDER BY created_at, rowid", (ins,)
        )
        docs = [_document(r) for r in rows]
        return [d for d in docs if statuses is None or d.status in statuses]

    def document_by_binary(self, binary_id: str) -> StoredDocument | None:
        rows = self._query(f"SELECT {_DOC_COLUMNS} FROM documents WHERE binary_id = ?", (binary_id,))
        return _document(rows[0]) if rows else None

    def binary(self, binary_id: str) -> tuple[str, bytes] | None:
        rows = self._query("SELECT content_type, data FROM binaries WHERE id = ?", (binary_id,))
        return (rows[0]["content_type"], bytes(rows[0]["data"])) if rows else None

    def set_status(self, db: sqlite3.Connection, document_id: str, status: str) -> None:
        db.execute("UPDATE documents SET status = ?, updated_at = ? WHERE id = ?", (status, now(), document_id))

    def insert_document(self, db: sqlite3.Connection, doc: StoredDocument, content: bytes) -> None:
        db.execute(
            "INSERT INTO binaries (id, content_type, data) VALUES (?, ?, ?)",
            (doc.binary_id, doc.content_type, content),
        )
        db.execute(
            f"INSERT INTO documents ({_DOC_COLUMNS}) VALUES ({', '.join('?' * 19)})",
            (
                doc.id,
                doc.unique_id,
                doc.patient_ins,
                doc.status,
                doc.content_hash,
                doc.size,
                doc.title,
                doc.content_type,
                doc.author_idnat,
                doc.author_org,
                json.dumps(sorted(doc.visibility)),
                doc.binary_id,
                doc.submission_set_id,
                doc.replaces_id,
                doc.created_at,
                doc.updated_at,
                json.dumps(doc.resource),
                doc.transport,
                int(doc.archived),
            ),
        )

    def set_archived(self, db: sqlite3.Connection, document_id: str, archived: bool) -> None:
        db.execute(
            "UPDATE documents SET archived = ?, updated_at = ? WHERE id = ?", (int(archived), now(), document_id)
        )

    def set_visibility(self, db: sqlite3.Connection, document_id: str, visibility: frozenset[str]) -> None:
        """New confidentiality codes of a stored document (column and its resource's securityLabel)."""
        rows = db.execute("SELECT resource FROM documents WHERE id = ?", (document_id,)).fetchall()
        resource = json.loads(rows[0][0]) if rows else {}
        system = f"urn:oid:{VISIBILITY_SYSTEM_OID}"
        kept = [
            label
            for label in resource.get("securityLabel") or []
            if not any(c.get("system") == system for c in label.get("coding") or [])
        ]
        resource["securityLabel"] = kept + [{"coding": [{"system": system, "code": c}]} for c in sorted(visibility)]
        db.execute(
            "UPDATE documents SET visibility = ?, resource = ?, updated_at = ? WHERE id = ?",
            (json.dumps(sorted(visibility)), json.dumps(resource), now(), document_id),
        )

    def save_xds_metadata(self, db: sqlite3.Connection, document_id: str, xml: str) -> None:
        db.execute("INSERT OR REPLACE INTO xds_metadata (document_id, xml) VALUES (?, ?)", (document_id, xml))

    def xds_metadata(self, document_id: str) -> str | None:
        rows = self._query("SELECT xml FROM xds_metadata WHERE document_id = ?", (document_id,))
        return str(rows[0]["xml"]) if rows else None

    def insert_submission_set(self, db: sqlite3.Connection, set_id: str, ins: str, resource: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO submission_sets (id, patient_ins, created_at, resource) VALUES (?, ?, ?, ?)",
            (set_id, ins, now(), json.dumps(resource)),
        )

    # --- pushes, traces, idempotency, counters --------------------------------------------------------

    def record_push(
        self,
        *,
        ins: str | None,
        actor: str,
        idempotency_key: str | None,
        outcome: str,
        code: str | None,
        http_status: int,
        unique_ids: list[str],
        transport: str = "mhd",
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO pushes (received_at, patient_ins, actor, idempotency_key, outcome, code, "
                "http_status, unique_ids, transport) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), ins, actor, idempotency_key, outcome, code, http_status, json.dumps(unique_ids), transport),
            )
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET value = value + 1",
                (f"pushes_{outcome}",),
            )

    def pushes(self, ins: str | None = None) -> list[dict[str, Any]]:
        if ins is None:
            rows = self._query("SELECT * FROM pushes ORDER BY id")
        else:
            rows = self._query("SELECT * FROM pushes WHERE patient_ins = ? ORDER BY id", (ins,))
        result = []
        for row in rows:
            item = dict(row)
            item["unique_ids"] = json.loads(item["unique_ids"])
            result.append(item)
        return result

    def record_trace(self, ins: str, actor: str, action: str, document_id: str | None, detail: str = "") -> None:
        with self.transaction() as db:
            self.add_trace(db, ins, actor, action, document_id, detail)

    def add_trace(
        self, db: sqlite3.Connection, ins: str, actor: str, action: str, document_id: str | None, detail: str = ""
    ) -> None:
        db.execute(
            "INSERT INTO traces (at, patient_ins, actor, action, document_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (now(), ins, actor, action, document_id, detail),
        )

    def traces(self, ins: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM traces WHERE patient_ins = ? ORDER BY id", (ins,))]

    def idempotent_response(self, key: str) -> tuple[str, int, str] | None:
        rows = self._query("SELECT request_hash, http_status, body FROM idempotency WHERE key = ?", (key,))
        return (rows[0]["request_hash"], rows[0]["http_status"], rows[0]["body"]) if rows else None

    def save_idempotent_response(self, key: str, request_hash: str, http_status: int, body: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO idempotency (key, request_hash, http_status, body, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, "
                "http_status = excluded.http_status, body = excluded.body",
                (key, request_hash, http_status, body, now()),
            )

    def bump(self, name: str, by: int = 1) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["value"] for r in self._query("SELECT name, value FROM counters ORDER BY name")}
