-- The console's message list (docs/console.md, ADR 0025): keyset pages by id within one channel or one
-- sender stay as cheap as the first page, whatever the journal's size. PostgreSQL already had the sender
-- index (postgres/0001), hence IF NOT EXISTS.
CREATE INDEX IF NOT EXISTS ix_messages_channel ON messages (channel, id);
CREATE INDEX IF NOT EXISTS ix_messages_sender ON messages (sender, id);
