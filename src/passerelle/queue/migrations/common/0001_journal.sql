-- Journal: one row per inbound message, lanes for per-patient order, dedup keys, events.
-- Written once for both dialects (migrations/__init__.py fills ${TIME}, ${BYTES}... per dialect: SQLite
-- keeps times as UNIX seconds in REAL, PostgreSQL as timestamptz). In PostgreSQL the tables are created
-- in the journal's schema (search_path is set by PostgresJournal).
CREATE TABLE messages (
    id            ${ROW_ID},
    received_at   ${TIME}   NOT NULL,
    updated_at    ${TIME}   NOT NULL,
    channel       TEXT      NOT NULL,
    sender        TEXT      NOT NULL,
    kind          TEXT      NOT NULL,
    message_id    TEXT      NOT NULL DEFAULT '',
    dedup_key     TEXT      NOT NULL DEFAULT '',
    content_hash  TEXT      NOT NULL DEFAULT '',
    lane          TEXT      NOT NULL,
    state         TEXT      NOT NULL,
    detail        TEXT      NOT NULL DEFAULT '',
    attempts      INTEGER   NOT NULL DEFAULT 0,
    next_due      ${TIME},
    deadline      ${TIME},
    document_id   TEXT      NOT NULL DEFAULT '',
    patient_id    TEXT      NOT NULL DEFAULT '',
    raw           ${BYTES}  NOT NULL,
    ack           ${BYTES}  NOT NULL DEFAULT ${NO_BYTES}
);
CREATE INDEX ix_messages_lane_pending ON messages (lane, id)
    WHERE state IN ('accepted', 'retry', 'parked', 'dead');
CREATE INDEX ix_messages_state ON messages (state, id);
CREATE INDEX ix_messages_document ON messages (document_id) WHERE document_id <> '';
CREATE INDEX ix_messages_patient ON messages (patient_id) WHERE patient_id <> '';
CREATE INDEX ix_messages_received ON messages (received_at);

-- Globally unique, even across gateway instances sharing a PostgreSQL database: appends insert here
-- inside their own transaction. No foreign key: keys are trimmed with their rows (retention).
CREATE TABLE dedup (
    dedup_key    TEXT     PRIMARY KEY,
    content_hash TEXT     NOT NULL,
    row_id       ${ID}    NOT NULL,
    created_at   ${TIME}  NOT NULL
) ${NO_ROWID};

-- One row per ordering key: its head message and when it is due. Only heads are ever claimed.
CREATE TABLE lanes (
    lane        TEXT PRIMARY KEY,
    head_id     ${ID},
    due_at      ${TIME},     -- NULL while the head is dead (the lane waits for an operator)
    lease_until ${TIME},
    worker      TEXT
) ${NO_ROWID};
CREATE INDEX ix_lanes_due ON lanes (due_at) WHERE head_id IS NOT NULL AND due_at IS NOT NULL;

CREATE TABLE events (
    id      ${ROW_ID},
    row_id  ${ID}    NOT NULL,
    at      ${TIME}  NOT NULL,
    kind    TEXT     NOT NULL,
    detail  TEXT     NOT NULL DEFAULT '',
    data    ${JSON}  NOT NULL DEFAULT ${NO_JSON}
);
CREATE INDEX ix_events_row ON events (row_id, id);

-- Local patient-id → INS mapping (DICOM sites without INS in PatientID).
CREATE TABLE patient_map (
    sender    TEXT NOT NULL,
    local_id  TEXT NOT NULL,
    ins       TEXT NOT NULL,
    ins_oid   TEXT NOT NULL,
    PRIMARY KEY (sender, local_id)
) ${NO_ROWID};

-- Local consent registry fed by PAM France ADT ZFA segments (docs/consent.md).
CREATE TABLE consent_registry (
    ins           TEXT     NOT NULL PRIMARY KEY,
    ins_oid       TEXT     NOT NULL,
    dmp_status    TEXT     NOT NULL DEFAULT '',   -- ACTIF / FERME / INEXISTANT / ''
    feeding       TEXT     NOT NULL DEFAULT '',   -- ZFA-9: NA / IO / INO
    consultation  TEXT     NOT NULL DEFAULT '',   -- ZFA-11: NA / INC / IC
    updated_at    ${TIME}  NOT NULL,
    source_row    ${ID}    NOT NULL DEFAULT 0
) ${NO_ROWID};

-- Latest version of each logical document series (a lab order, an imaging study), so a correction or
-- a changed study becomes a replacement of what was sent before.
CREATE TABLE document_series (
    series_key  TEXT     NOT NULL PRIMARY KEY,
    unique_id   TEXT     NOT NULL,
    set_id      TEXT     NOT NULL,
    version     INTEGER  NOT NULL,
    row_id      ${ID}    NOT NULL,
    updated_at  ${TIME}  NOT NULL
) ${NO_ROWID};
