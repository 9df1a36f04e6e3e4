-- What only the PostgreSQL journal has after common/0004_workers.sql: the heartbeats of the dispatch
-- workers of every instance sharing the schema (one row per live worker; a dead one's row is removed
-- when its claims are given back).
CREATE TABLE workers (
    name     TEXT         PRIMARY KEY,
    seen_at  TIMESTAMPTZ  NOT NULL
);
