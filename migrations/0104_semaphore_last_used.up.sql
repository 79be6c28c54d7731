-- pgcoord.semaphores gains last_used, as pgcoord.locks has: when a holder
-- last recorded the limit (a Semaphore records it at its first Acquire and
-- again when that is older than ten minutes). Pruning deletes the limits of
-- semaphores nobody used for longer than the retention and whose slots
-- nobody holds or waits for; a table that grew with every semaphore name
-- ever used now shrinks back. Existing rows count as used now: they are
-- kept for one retention.
ALTER TABLE pgcoord.semaphores ADD COLUMN last_used timestamptz NOT NULL DEFAULT now();
