-- Journal: one row per inbound message, lanes for per-patient order, dedup keys, events.
-- Times are UNIX seconds (REAL, UTC).
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    received_at   REAL    NOT NULL,
    updated_at    REAL    NOT NULL,
    channel       TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    message_id    TEXT    NOT NULL DEFAULT '',
    dedup_key     TEXT    NOT NULL DEFAULT '',
    content_hash  TEXT    NOT NULL DEFAULT '',
    lane          TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    detail        TEXT    NOT NULL DEFAULT '',
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_due      REAL,
    deadline      REAL,
    document_id   TEXT    NOT NULL DEFAULT '',
    patient_id    TEXT    NOT NULL DEFAULT '',
    raw           BLOB    NOT NULL,
    ack           BLOB    NOT NULL DEFAULT x''
);
CREATE INDEX ix_messages_lane_pending ON messages (lane, id)
    WHERE state IN ('accepted', 'retry', 'parked', 'dead');
CREATE INDEX ix_messages_state ON messages (state, id);
CREATE INDEX ix_messages_document ON messages (document_id) WHERE document_id <> '';
CREATE INDEX ix_messages_patient ON messages (patient_id) WHERE patient_id <> '';
CREATE INDEX ix_messages_received ON messages (received_at);

CREATE TABLE dedup (
    dedup_key    TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    row_id       INTEGER NOT NULL,
    created_at   REAL NOT NULL
) WITHOUT ROWID;

-- One row per ordering key: its head message and when it is due. Only heads are ever claimed.
CREATE TABLE lanes (
    lane        TEXT PRIMARY KEY,
    head_id     INTEGER,
    due_at      REAL,            -- NULL while the head is dead (the lane waits for an operator)
    lease_until REAL,
    worker      TEXT
) WITHOUT ROWID;
CREATE INDEX ix_lanes_due ON lanes (due_at) WHERE head_id IS NOT NULL AND due_at IS NOT NULL;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    row_id  INTEGER NOT NULL,
    at      REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    detail  TEXT    NOT NULL DEFAULT '',
    data    TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX ix_events_row ON events (row_id, id);

-- Local patient-id → INS mapping (DICOM sites without INS in PatientID), and the consent registry.
CREATE TABLE patient_map (
    sender    TEXT NOT NULL,
    local_id  TEXT NOT NULL,
    ins       TEXT NOT NULL,
    ins_oid   TEXT NOT NULL,
    PRIMARY KEY (sender, local_id)
) WITHOUT ROWID;

-- Local consent registry fed by PAM France ADT ZFA segments (dmp-interop.md §7).
CREATE TABLE consent_registry (
    ins           TEXT NOT NULL PRIMARY KEY,
    ins_oid       TEXT NOT NULL,
    dmp_status    TEXT NOT NULL DEFAULT '',   -- ACTIF / FERME / INEXISTANT / ''
    feeding       TEXT NOT NULL DEFAULT '',   -- ZFA-9: NA / IO / INO
    consultation  TEXT NOT NULL DEFAULT '',   -- ZFA-11: NA / INC / IC
    updated_at    REAL NOT NULL,
    source_row    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Latest version of each logical document series (a lab order, an imaging study), so a correction or
-- a changed study becomes a replacement of what was sent before.
CREATE TABLE document_series (
    series_key  TEXT NOT NULL PRIMARY KEY,
    unique_id   TEXT NOT NULL,
    set_id      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    row_id      INTEGER NOT NULL,
    updated_at  REAL NOT NULL
) WITHOUT ROWID;
