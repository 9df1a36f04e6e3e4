-- Storage bounds and retention (docs/journal.md).
-- Every row keeps the size and SHA-256 of the message as received, and when its payload was purged
-- (NULL: still there).
ALTER TABLE messages ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN purged_at ${TIME};
UPDATE messages SET size = length(raw), sha256 = ${RAW_SHA256};
-- Only accepted messages hold a dedup key.
UPDATE messages SET dedup_key = '' WHERE state = 'rejected' AND dedup_key <> '';

-- Payloads move to a table of their own, so purging one frees whole pages: in SQLite a row shrunk in
-- place leaves its page nearly empty, and later rows (higher ids) never land there. A rejected message
-- keeps its first 64 KiB (model.REJECTED_PAYLOAD_LIMIT). messages.raw stays, always empty (dropping a
-- column needs SQLite 3.35).
CREATE TABLE payloads (
    row_id  ${ID}     PRIMARY KEY,
    raw     ${BYTES}  NOT NULL
);
INSERT INTO payloads (row_id, raw)
    SELECT id, CASE WHEN state = 'rejected' THEN substr(raw, 1, 65536) ELSE raw END FROM messages;
UPDATE messages SET raw = ${NO_BYTES};

-- The purge's batches: settled or rejected rows whose payload is still there, and rows retention may delete.
CREATE INDEX ix_messages_unpurged ON messages (state, updated_at)
    WHERE purged_at IS NULL AND state IN ('delivered', 'refused', 'rejected');
CREATE INDEX ix_messages_final ON messages (updated_at) WHERE state IN ('delivered', 'refused', 'rejected');
