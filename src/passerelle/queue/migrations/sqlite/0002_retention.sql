-- What only the SQLite journal needs after common/0002_retention.sql: message ids are never reused, even
-- once retention has deleted the latest rows (audit records and document series name rows by id).
-- PostgreSQL's sequence already never goes back. The journal raises the mark before it deletes rows.
CREATE TABLE id_high_water (id INTEGER NOT NULL);
INSERT INTO id_high_water (id) SELECT COALESCE(MAX(id), 0) FROM messages;
