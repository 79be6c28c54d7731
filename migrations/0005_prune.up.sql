-- Retention (Config.Retention, `pgcoord prune`): a name's registration
-- records when a coordinator last registered it, so that names nobody uses
-- any more can be deleted without breaking collision detection for names in
-- use. Existing rows count as used now: pruning starts a retention later.
ALTER TABLE pgcoord.locks ADD COLUMN last_used timestamptz NOT NULL DEFAULT now();

-- held_locks.since, true to the millisecond (issue 15, item 2). pg_locks
-- has no grant time, and its waitstart is the start of a waiter's current
-- one-second slice; a session's state_change moves with every statement
-- (heartbeat checks included). So coordinators record, for holds and
-- server-side waits that last more than a moment (~100 ms), when they began
-- (server clock), in this table; short holds are never written, so an
-- acquire still costs no table write. UNLOGGED: no WAL, nothing to flush,
-- and after a crash the backends these rows describe are gone anyway.
CREATE UNLOGGED TABLE pgcoord.lock_since (
    key   bigint      NOT NULL,
    pid   integer     NOT NULL,
    since timestamptz NOT NULL,
    PRIMARY KEY (key, pid)
);

-- Same columns as before; since prefers the recorded time, and falls back
-- (for holds and waits younger than the recording delay) to what pg_locks
-- and pg_stat_activity tell: a waiter's slice start, a holder's session's
-- last statement end.
CREATE OR REPLACE VIEW pgcoord.held_locks AS
SELECT r.name,
       k.key,
       CASE WHEN l.mode = 'ExclusiveLock' THEN 'exclusive' ELSE 'shared' END AS mode,
       m.member_id,
       l.granted,
       CASE WHEN l.granted THEN coalesce(s.since, a.state_change)
            ELSE least(coalesce(s.since, l.waitstart), l.waitstart) END AS since,
       l.pid
FROM pg_catalog.pg_locks l
CROSS JOIN LATERAL (SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key) k
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pgcoord.members m ON m.session_tag = a.application_name AND m.stopped_at IS NULL
LEFT JOIN pgcoord.locks r ON r.key = k.key
LEFT JOIN pgcoord.lock_since s ON s.key = k.key AND s.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND (m.member_id IS NOT NULL OR r.name IS NOT NULL);
