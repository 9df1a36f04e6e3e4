"""Statements both SQL journals run as written (SQLite and PostgreSQL share the schema's shape).

They use SQLite's ``?`` placeholder; :func:`pg` gives the PostgreSQL form (``%s``). None contains a
literal ``?`` or ``%``. What really differs between the dialects (claims, appends, lane locking) stays in
each backend.
"""

from __future__ import annotations

from passerelle.queue._rows import ROW_SOURCE, SELECT_ROW

#: States whose row blocks the later rows of its lane; pending rows; final rows (retention may delete).
BLOCKING = "('accepted', 'retry', 'parked', 'dead')"
PENDING = "('accepted', 'retry', 'parked')"
FINAL = "('delivered', 'refused', 'rejected')"
REPLAYABLE = "('dead', 'refused', 'parked')"


def find(upward: bool) -> str:
    """:data:`FIND` or :data:`FIND_UP` (see :func:`passerelle.queue._rows.upward`)."""
    return FIND_UP if upward else FIND


def pg(statement: str) -> str:
    """The PostgreSQL (psycopg) form of a statement written with ``?`` placeholders."""
    return statement.replace("?", "%s")


ROW_BY_ID = f"SELECT {SELECT_ROW} FROM {ROW_SOURCE} WHERE m.id = ?"
# The page is chosen in ``messages`` alone, then joined to its payloads: joined first, PostgreSQL may
# merge-join the whole payloads index from its start (45 ms for a page above id 500,000 of 1,000,000).
_PAGE = f"SELECT {SELECT_ROW} FROM (SELECT * FROM messages m {{where}} ORDER BY m.id {{order}} LIMIT ?) m " + (
    "LEFT JOIN payloads p ON p.row_id = m.id ORDER BY m.id {order}"
)
FIND = _PAGE.replace("{order}", "DESC")
#: The page just above ``after_id`` (the backend reverses it to newest first).
FIND_UP = _PAGE.replace("{order}", "")
EVENTS_OF = "SELECT row_id, at, kind, detail, data FROM events WHERE row_id = ? ORDER BY id"
COUNTS = "SELECT state, COUNT(*) FROM messages GROUP BY state"
OLDEST_PENDING = f"SELECT MIN(received_at) FROM messages WHERE state IN {PENDING}"
#: The console's rates: rows received since a time (ix_messages_received), delivered since (ix_messages_final).
RECEIVED_SINCE = "SELECT COUNT(*) FROM messages WHERE received_at >= ?"
DELIVERED_SINCE = f"SELECT COUNT(*) FROM messages WHERE state = 'delivered' AND state IN {FINAL} AND updated_at >= ?"
#: SQLite's planner, without statistics, prefers ix_messages_state (every delivered row); the final rows'
#: index on updated_at reads only the last hour's (benchmarks/console_paging.py).
DELIVERED_SINCE_SQLITE = DELIVERED_SINCE.replace("FROM messages", "FROM messages INDEXED BY ix_messages_final")
SET_DEADLINE = "UPDATE messages SET deadline = ? WHERE id = ? AND deadline IS NULL"

SETTLE = (
    "UPDATE messages SET state = ?, detail = ?, attempts = attempts + ?, next_due = ?, updated_at = ?, "
    "document_id = CASE WHEN ? <> '' THEN ? ELSE document_id END, "
    "patient_id = CASE WHEN ? <> '' THEN ? ELSE patient_id END, deadline = COALESCE(deadline, ?) WHERE id = ?"
)
#: The head waits until ``due_at`` (retry, park); the head is dead (the lane waits for an operator).
LANE_WAIT = "UPDATE lanes SET due_at = ?, lease_until = NULL, worker = NULL WHERE lane = ? AND head_id = ?"
LANE_HOLD = "UPDATE lanes SET due_at = NULL, lease_until = NULL, worker = NULL WHERE lane = ? AND head_id = ?"
NEXT_HEAD = f"SELECT id, state, next_due FROM messages WHERE lane = ? AND state IN {BLOCKING} ORDER BY id LIMIT 1"
#: A replay: only a dead, refused or parked row whose payload is still there.
REQUEUE = (
    "UPDATE messages SET state = 'accepted', attempts = 0, next_due = ?, deadline = NULL, updated_at = ?, "
    f"detail = ? WHERE id = ? AND state IN {REPLAYABLE} AND purged_at IS NULL"
)
REPLAY_EVENT = "INSERT INTO events (row_id, at, kind, detail) VALUES (?, ?, 'replay', ?)"

REGISTRY_GET = (
    "SELECT ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row FROM consent_registry WHERE ins = ?"
)
REGISTRY_PUT = (
    "INSERT INTO consent_registry (ins, ins_oid, dmp_status, feeding, consultation, updated_at, source_row) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ins) DO UPDATE SET ins_oid = excluded.ins_oid, "
    "dmp_status = excluded.dmp_status, feeding = excluded.feeding, consultation = excluded.consultation, "
    "updated_at = excluded.updated_at, source_row = excluded.source_row"
)
SERIES_GET = "SELECT series_key, unique_id, set_id, version, row_id FROM document_series WHERE series_key = ?"
SERIES_PUT = (
    "INSERT INTO document_series (series_key, unique_id, set_id, version, row_id, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series_key) DO UPDATE SET unique_id = excluded.unique_id, "
    "set_id = excluded.set_id, version = excluded.version, row_id = excluded.row_id, updated_at = excluded.updated_at"
)
PATIENT_MAP_GET = "SELECT ins, ins_oid FROM patient_map WHERE sender = ? AND local_id = ?"
PATIENT_MAP_PUT = (
    "INSERT INTO patient_map (sender, local_id, ins, ins_oid) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (sender, local_id) DO UPDATE SET ins = excluded.ins, ins_oid = excluded.ins_oid"
)

# --- retention (docs/journal.md) ------------------------------------------------------------------------
# The literal ``state IN {FINAL}`` term lets SQLite use the partial indexes of migration 0002.

_PAYLOAD_DUE = f"state = ? AND state IN {FINAL} AND purged_at IS NULL AND updated_at < ?"
COUNT_PAYLOADS = f"SELECT COUNT(*) FROM messages WHERE {_PAYLOAD_DUE}"
PAYLOADS_DUE = f"SELECT id FROM messages WHERE {_PAYLOAD_DUE} ORDER BY updated_at LIMIT ?"
_RECORD_DUE = f"state IN {FINAL} AND updated_at < ?"
COUNT_RECORDS = f"SELECT COUNT(*) FROM messages WHERE {_RECORD_DUE}"
RECORDS_DUE = f"SELECT id, dedup_key FROM messages WHERE {_RECORD_DUE} ORDER BY updated_at LIMIT ?"
