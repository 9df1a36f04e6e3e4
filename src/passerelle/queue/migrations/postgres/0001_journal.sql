-- What only the PostgreSQL journal has, after common/0001_journal.sql: browsing by sender, and an index
-- to trim dedup keys by age.
CREATE INDEX ix_messages_sender ON messages (sender, id);
CREATE INDEX ix_dedup_created ON dedup (created_at);
