-- Storage bounds and retention (docs/journal.md): every row keeps the size and SHA-256 of the message as
-- received, and when its payload was purged (NULL: still there).
ALTER TABLE messages ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN purged_at ${TIME};
UPDATE messages SET size = length(raw), sha256 = ${RAW_SHA256};
-- A rejected message keeps its first 64 KiB (model.REJECTED_PAYLOAD_LIMIT) and holds no dedup key.
UPDATE messages SET raw = substr(raw, 1, 65536) WHERE state = 'rejected' AND length(raw) > 65536;
UPDATE messages SET dedup_key = '' WHERE state = 'rejected' AND dedup_key <> '';
-- The purge's batches: settled or rejected rows whose payload is still there, and rows retention may delete.
CREATE INDEX ix_messages_unpurged ON messages (state, updated_at)
    WHERE purged_at IS NULL AND state IN ('delivered', 'refused', 'rejected');
CREATE INDEX ix_messages_final ON messages (updated_at) WHERE state IN ('delivered', 'refused', 'rejected');
