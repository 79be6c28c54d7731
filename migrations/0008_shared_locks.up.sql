-- Shared (read) locks: Lock.AcquireShared takes the one-bigint advisory
-- lock of a name in ShareLock mode (pgcoord.held_locks shows mode
-- 'shared').
--
-- A writer's intent. PostgreSQL refuses a shared request, try or wait,
-- while an exclusive request waits in the lock's queue, so a writer
-- waiting on the server is not starved by readers. A writer waiting beyond
-- its coordinator's session budget is in no queue: it holds instead, on a
-- lock session, an exclusive lock on the key's writer intent, the two-int
-- key ((key >> 32) # 1431655765, low 32 bits of key), and every shared try
-- and wait first takes that intent shared for the length of its statement:
-- refused (a try) or queued (a wait) while a writer holds it.
CREATE FUNCTION pgcoord.wait_lock_shared(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
    PERFORM pg_advisory_lock_shared(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;
