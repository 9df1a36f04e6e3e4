-- Dispatch recovery (docs/journal.md): claims held by a worker that is gone come back before their
-- lease ends. Only leased lanes name a worker, so this index stays as small as the claims in flight.
CREATE INDEX ix_lanes_worker ON lanes (worker) WHERE worker IS NOT NULL;
