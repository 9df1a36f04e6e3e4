-- Journal (PostgreSQL): one row per inbound message, lanes for per-patient order, dedup keys, events.
-- Same shape as migrations/sqlite/0001_journal.sql. Tables are created in the journal's schema
-- (search_path is set by PostgresJournal); times are timestamptz (UTC).
CREATE TABLE messages (
    id            BIGSERIAL   PRIMARY KEY,
    received_at   TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    channel       TEXT        NOT NULL,
    sender        TEXT        NOT NULL,
    kind          TEXT        NOT NULL,
    message_id    TEXT        NOT NULL DEFAULT '',
    dedup_key     TEXT        NOT NULL DEFAULT '',
    content_hash  TEXT        NOT NULL DEFAULT '',
    lane          TEXT        NOT NULL,
    state         TEXT        NOT NULL,
    detail        TEXT        NOT NULL DEFAULT '',
    attempts      INTEGER     NOT NULL DEFAULT 0,
    next_due      TIMESTAMPTZ,
    deadline      TIMESTAMPTZ,
    document_id   TEXT        NOT NULL DEFAULT '',
    patient_id    TEXT        NOT NULL DEFAULT '',
    raw           BYTEA       NOT NULL,
    ack           BYTEA       NOT NULL DEFAULT ''::bytea
);
CREATE INDEX ix_messages_lane_pending ON messages (lane, id)
    WHERE state IN ('accepted', 'retry', 'parked', 'dead');
CREATE INDEX ix_messages_state ON messages (state, id);
CREATE INDEX ix_messages_document ON messages (document_id) WHERE document_id <> '';
CREATE INDEX ix_messages_patient ON messages (patient_id) WHERE patient_id <> '';
CREATE INDEX ix_messages_received ON messages (received_at);
CREATE INDEX ix_messages_sender ON messages (sender, id);

-- Globally unique, even across gateway instances sharing the database: appends insert here with
-- ON CONFLICT inside their own transaction. No foreign key, so messages can later be partitioned
-- or trimmed independently of the keys.
CREATE TABLE dedup (
    dedup_key    TEXT        PRIMARY KEY,
    content_hash TEXT        NOT NULL,
    row_id       BIGINT      NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_dedup_created ON dedup (created_at);

-- One row per ordering key: its head message and when it is due. Only heads are ever claimed
-- (SELECT ... FOR UPDATE SKIP LOCKED); appends lock the lane row before they take message ids.
CREATE TABLE lanes (
    lane        TEXT PRIMARY KEY,
    head_id     BIGINT,
    due_at      TIMESTAMPTZ,     -- NULL while the head is dead (the lane waits for an operator)
    lease_until TIMESTAMPTZ,
    worker      TEXT
);
CREATE INDEX ix_lanes_due ON lanes (due_at) WHERE head_id IS NOT NULL AND due_at IS NOT NULL;

CREATE TABLE events (
    id      BIGSERIAL   PRIMARY KEY,
    row_id  BIGINT      NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    kind    TEXT        NOT NULL,
    detail  TEXT        NOT NULL DEFAULT '',
    data    JSONB       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX ix_events_row ON events (row_id, id);

-- Local patient-id → INS mapping (DICOM sites without INS in PatientID).
CREATE TABLE patient_map (
    sender    TEXT NOT NULL,
    local_id  TEXT NOT NULL,
    ins       TEXT NOT NULL,
    ins_oid   TEXT NOT NULL,
    PRIMARY KEY (sender, local_id)
);

-- Local consent registry fed by PAM France ADT ZFA segments (dmp-interop.md §7).
CREATE TABLE consent_registry (
    ins           TEXT        NOT NULL PRIMARY KEY,
    ins_oid       TEXT        NOT NULL,
    dmp_status    TEXT        NOT NULL DEFAULT '',   -- ACTIF / FERME / INEXISTANT / ''
    feeding       TEXT        NOT NULL DEFAULT '',   -- ZFA-9: NA / IO / INO
    consultation  TEXT        NOT NULL DEFAULT '',   -- ZFA-11: NA / INC / IC
    updated_at    TIMESTAMPTZ NOT NULL,
    source_row    BIGINT      NOT NULL DEFAULT 0
);

-- Latest version of each logical document series (a lab order, an imaging study).
CREATE TABLE document_series (
    series_key  TEXT        NOT NULL PRIMARY KEY,
    unique_id   TEXT        NOT NULL,
    set_id      TEXT        NOT NULL,
    version     INTEGER     NOT NULL,
    row_id      BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
