-- pgcoord schema as released in v0.1.0: the whole schema in one migration.
-- The pre-release history (versions 1 to 13) was squashed into this file;
-- release versions start at 100 so that a schema_migrations row of the old
-- history can never be taken for one of the release (Migrate and Start
-- refuse such a schema with ErrPreReleaseSchema). Later releases add files
-- numbered after this one.
--
-- Everything lives in schema pgcoord so an application's own tables and
-- migrations are never touched. Holding a lock writes nothing here: who holds
-- what is read from pg_locks (see the held_locks view).

CREATE SCHEMA IF NOT EXISTS pgcoord;

-- lock_key turns a full lock name (Prefix+Name) into its advisory-lock key:
-- the first 8 bytes of SHA-256 of the UTF-8 name, big-endian, as a signed
-- bigint. The Go side (internal/hash) computes the same value; tests pin both.
CREATE FUNCTION pgcoord.lock_key(name text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT ('x' || encode(substr(sha256(convert_to(name, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint
$$;

-- Fencing tokens. A sequence survives a server crash without going backwards,
-- and nextval is taken while the lock is held, so successive holds of one
-- name always get larger tokens.
CREATE SEQUENCE pgcoord.fencing_token AS bigint MINVALUE 1;

-- Fencing tokens that keep increasing across a failover, even with
-- asynchronous replication. A promoted standby's copy of the
-- pgcoord.fencing_token sequence lags its old primary's by whatever WAL had
-- not reached it, so nextval alone would hand out again tokens the old
-- primary already gave. Promotion starts a new timeline, so every token is
-- taken at or above a floor set by the timeline the server writes on:
-- timeline << 48. The first token on a new timeline moves the sequence up
-- to that timeline's floor, above anything an older timeline could have
-- issued (2^48 tokens each); later tokens are plain nextval. The sequence
-- is never moved down, so tokens also stay increasing through a
-- pg_upgrade or a dump and restore, which may start timelines over at 1.
--
-- The timeline is the WAL insert position's (the first 8 hex digits of its
-- WAL file name): a promoted standby writes on its new timeline from its
-- first write, while pg_control_checkpoint() shows it only after the next
-- checkpoint.
CREATE FUNCTION pgcoord.timeline_floor() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    timeline bigint := ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::integer;
BEGIN
    IF timeline > 32767 THEN
        RAISE EXCEPTION 'pgcoord: timeline % leaves no room for fencing tokens', timeline;
    END IF;
    RETURN timeline << 48;
END
$$;

-- raise_token_floor takes the first token of this server's timeline: one
-- session moves the sequence up to the floor; the others wait for it (a
-- transaction lock, released when the statement ends) and then find the
-- sequence above it. Without the lock a late setval could move the
-- sequence back below tokens already issued. The key is
-- hash.Key("pgcoord\x00token-floor"): no lock name can contain a NUL byte.
-- It runs as its owner, since setval needs UPDATE on the sequence and an
-- application role has only USAGE; it takes no argument, so nobody can
-- move the sequence anywhere but to the floor of the current timeline.
CREATE FUNCTION pgcoord.raise_token_floor() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    floor bigint := pgcoord.timeline_floor();
    token bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4802603721983448232);
    token := nextval('pgcoord.fencing_token');
    IF token <= floor THEN
        PERFORM setval('pgcoord.fencing_token', floor);
        token := nextval('pgcoord.fencing_token');
    END IF;
    RETURN token;
END
$$;

-- next_token is every fencing token: plain nextval once the sequence is
-- above the floor of the server's timeline.
CREATE FUNCTION pgcoord.next_token() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    token bigint := nextval('pgcoord.fencing_token');
BEGIN
    IF token > pgcoord.timeline_floor() THEN
        RETURN token;
    END IF;
    RETURN pgcoord.raise_token_floor();
END
$$;

-- members has one row per member id. A live member holds a two-int advisory
-- lock on member_key (a key space that never meets the one-bigint lock keys),
-- which is what makes a second live member with the same id fail to start.
CREATE TABLE pgcoord.members (
    member_id          text        PRIMARY KEY,
    prefix             text        NOT NULL DEFAULT '',
    agent_id           text        NOT NULL,
    hostname           text        NOT NULL DEFAULT '',
    pid                integer     NOT NULL DEFAULT 0,
    started_at         timestamptz NOT NULL DEFAULT now(),
    last_heartbeat     timestamptz NOT NULL DEFAULT now(),
    stopped_at         timestamptz,
    heartbeat_interval interval    NOT NULL DEFAULT '1 second',
    -- session_tag is the application_name of every session the member opens;
    -- it ties pg_stat_activity (and so pg_locks) rows to the member without a
    -- write per session.
    session_tag        text        NOT NULL,
    member_key         bigint      NOT NULL,
    -- backend_pid is the pid of the member's control session.
    backend_pid        integer,
    -- lease is the member's lease (SessionTimeout less two heartbeats),
    -- recorded by a leader with its term: a leader whose heartbeat has not
    -- succeeded for that long leads no more, from its first look (see
    -- beatlease.go), so a new leader that finds its predecessor's member
    -- lock free and its heartbeat older than this skips the grace it
    -- otherwise gives a predecessor that did not resign. Null for members
    -- that never recorded it: they get the full grace.
    lease              interval
)
-- Heartbeats update members once a second per member. No index covers
-- last_heartbeat, so each update can be HOT (the new row version on the
-- same page, no index entry to add) when the page has room: leaving 30% of
-- every page free keeps the table from growing under a fleet's heartbeats.
WITH (fillfactor = 70);

CREATE INDEX members_session_tag_idx ON pgcoord.members (session_tag);

-- locks is the name registry: it turns keys back into names and refuses a
-- second name whose key is already taken, so two names never share a lock.
CREATE TABLE pgcoord.locks (
    key        bigint      PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- last_used is when a coordinator last registered the name (Retention,
    -- `pgcoord prune`): names nobody uses any more can be deleted without
    -- breaking collision detection for names in use.
    last_used  timestamptz NOT NULL DEFAULT now()
);

-- wait_lock waits on the server for a lock for at most timeout_ms and returns
-- a fencing token, or 0 when the wait timed out. Callers wait in slices of at
-- most a second so that no waiter holds a snapshot open for long (it would
-- hold back VACUUM and CREATE INDEX CONCURRENTLY).
CREATE FUNCTION pgcoord.wait_lock(key bigint, timeout_ms integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM set_config('lock_timeout', greatest(timeout_ms, 1)::text || 'ms', true);
    PERFORM pg_advisory_lock(key);
    RETURN pgcoord.next_token();
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END
$$;

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

-- Opt-in fencing in the database (Config.Fencing): each acquire records its
-- token here, so that a write in the application's own transaction can be
-- made conditional on the lock still being the writer's.
CREATE TABLE pgcoord.fences (
    key        bigint      PRIMARY KEY,
    token      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- fence_ok is true while token is the newest recorded for key, and locks
-- that fence row (FOR SHARE) until the calling transaction ends: a newer
-- holder's acquire then waits for that transaction, so a write guarded by
-- fence_ok can never land after the lock has passed on.
CREATE FUNCTION pgcoord.fence_ok(key bigint, token bigint) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
BEGIN
    PERFORM 1 FROM pgcoord.fences f WHERE f.key = fence_ok.key AND f.token = fence_ok.token FOR SHARE;
    RETURN FOUND;
END
$$;

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

-- live_members: the whole members row of every running member (not
-- stopped, and its control session still holds the member lock), then
-- heartbeat_age, so a query written against members works against it
-- unchanged. A view's columns cannot be reordered in place: a column added
-- to members means DROP and CREATE of this view and of live_group_members.
CREATE VIEW pgcoord.live_members AS
SELECT m.*,
       now() - m.last_heartbeat AS heartbeat_age
FROM pgcoord.members m
WHERE m.stopped_at IS NULL
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND l.classid::bigint = ((m.member_key >> 32) & 4294967295)
        AND l.objid::bigint = (m.member_key & 4294967295));

-- held_locks: every pgcoord lock held or waited for, from pg_locks and
-- pg_stat_activity. since prefers the time recorded in lock_since, and falls
-- back (for holds and waits younger than the recording delay) to what
-- pg_locks and pg_stat_activity tell: a waiter's slice start, a holder's
-- session's last statement end. backend_pid is the server backend that
-- holds or waits (pid is always a client's OS process in these views).
CREATE VIEW pgcoord.held_locks AS
SELECT r.name,
       k.key,
       CASE WHEN l.mode = 'ExclusiveLock' THEN 'exclusive' ELSE 'shared' END AS mode,
       m.member_id,
       l.granted,
       CASE WHEN l.granted THEN coalesce(s.since, a.state_change)
            ELSE least(coalesce(s.since, l.waitstart), l.waitstart) END AS since,
       l.pid AS backend_pid
FROM pg_catalog.pg_locks l
CROSS JOIN LATERAL (SELECT ((l.classid::bigint << 32) | l.objid::bigint) AS key) k
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
LEFT JOIN pgcoord.members m ON m.session_tag = a.application_name AND m.stopped_at IS NULL
LEFT JOIN pgcoord.locks r ON r.key = k.key
LEFT JOIN pgcoord.lock_since s ON s.key = k.key AND s.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND (m.member_id IS NOT NULL OR r.name IS NOT NULL);

-- Leader election (Coordinator.Election). Leadership itself is an exclusive
-- advisory lock on the key of the election's lock name,
-- 'pgcoord.election:' || election (see Election), held through the
-- leader's sessions like any lock: a leader that dies frees it at once.
-- This table records each election's latest term, written by its leader
-- while it holds the lock: who, the value it proclaimed, the term's fencing
-- token and when the term began. A row is never proof of leadership on its
-- own (its leader may have died since): the leaders view checks the lock.
CREATE TABLE pgcoord.elections (
    -- election is the full name, Prefix+name.
    election    text        PRIMARY KEY,
    -- key is the advisory-lock key of 'pgcoord.election:' || election.
    key         bigint      NOT NULL,
    member_id   text        NOT NULL,
    value       text        NOT NULL DEFAULT '',
    -- token is the term's fencing token: terms of one election get
    -- strictly increasing tokens, and a row is only ever overwritten by a
    -- newer term (begin_term).
    token       bigint      NOT NULL,
    since       timestamptz NOT NULL DEFAULT now(),
    -- resigned_at is set when the leader resigned (end_term): its
    -- successor need not wait for it to be told.
    resigned_at timestamptz
);

-- begin_term records a new term, only when its token is newer than the
-- recorded one (a leader that lost its lock without knowing cannot
-- overwrite its successor), and notifies observers. It returns the term's
-- start, or null when a newer term is recorded.
CREATE FUNCTION pgcoord.begin_term(election text, key bigint, member_id text, value text, token bigint)
    RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    started timestamptz;
BEGIN
    INSERT INTO pgcoord.elections AS e (election, key, member_id, value, token, since, resigned_at)
    VALUES (begin_term.election, begin_term.key, begin_term.member_id, begin_term.value, begin_term.token, now(), NULL)
    ON CONFLICT ON CONSTRAINT elections_pkey DO UPDATE
        SET key = excluded.key, member_id = excluded.member_id, value = excluded.value,
            token = excluded.token, since = excluded.since, resigned_at = NULL
        WHERE e.token < excluded.token
    RETURNING e.since INTO started;
    IF started IS NOT NULL THEN
        PERFORM pg_notify('pgcoord_leader', begin_term.key::text);
    END IF;
    RETURN started;
END
$$;

-- proclaim changes the value of the term whose token is given; false when
-- that term is not the recorded one any more.
CREATE FUNCTION pgcoord.proclaim(election text, token bigint, value text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    k bigint;
BEGIN
    UPDATE pgcoord.elections e SET value = proclaim.value
    WHERE e.election = proclaim.election AND e.token = proclaim.token AND e.resigned_at IS NULL
    RETURNING e.key INTO k;
    IF k IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('pgcoord_leader', k::text);
    RETURN true;
END
$$;

-- end_term marks the term whose token is given resigned (Election.Resign)
-- and notifies observers; false when it is not the recorded term.
CREATE FUNCTION pgcoord.end_term(election text, token bigint)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
DECLARE
    k bigint;
BEGIN
    UPDATE pgcoord.elections e SET resigned_at = now()
    WHERE e.election = end_term.election AND e.token = end_term.token AND e.resigned_at IS NULL
    RETURNING e.key INTO k;
    IF k IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('pgcoord_leader', k::text);
    RETURN true;
END
$$;

-- leaders: the current leader of every election, for people and for
-- Election.Leader. A term counts only while its leader has not resigned,
-- is a running member and a session of that member (by application_name,
-- as in held_locks) holds the election's lock. Between a leader's death
-- and its successor's first write an election has no row here.
CREATE VIEW pgcoord.leaders AS
SELECT e.election, e.member_id, e.value, e.token, e.since, m.hostname, m.pid
FROM pgcoord.elections e
JOIN pgcoord.members m ON m.member_id = e.member_id AND m.stopped_at IS NULL
WHERE e.resigned_at IS NULL
  AND EXISTS (
      SELECT 1 FROM pg_catalog.pg_locks l
      JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
        AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        AND ((l.classid::bigint << 32) | l.objid::bigint) = e.key
        AND a.application_name = m.session_tag);

-- Semaphores (Coordinator.Semaphore): at most `slots` holders of a name.
-- Each holder holds one of the slot locks
-- 'pgcoord.semaphore:' || semaphore || '/' || slots || '#' || i, for i in
-- 0 .. slots - 1, through its member's sessions like any lock: a killed
-- holder's slot is free at once. The limit is part of the slot names, so
-- holders with different limits never share slots; this table lists each
-- limit a semaphore was used with, so that a holder can check, once it
-- holds its slot, that nobody holds a slot of another limit (they would
-- disagree on how many may hold: ErrLimitMismatch).
CREATE TABLE pgcoord.semaphores (
    semaphore  text        NOT NULL,
    slots      integer     NOT NULL CHECK (slots > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (semaphore, slots)
);

-- semaphore_slot_key is the advisory-lock key of slot i of a semaphore
-- used with the given number of slots.
CREATE FUNCTION pgcoord.semaphore_slot_key(semaphore text, slots integer, i integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT pgcoord.lock_key('pgcoord.semaphore:' || semaphore || '/' || slots || '#' || i)
$$;

-- semaphore_holders: every held slot of every semaphore, for people:
-- slots is the limit the holder uses, slot the one it holds (0 .. slots - 1).
CREATE VIEW pgcoord.semaphore_holders AS
SELECT s.semaphore, s.slots, g.i AS slot, h.member_id, h.since, h.backend_pid
FROM pgcoord.semaphores s
CROSS JOIN LATERAL generate_series(0, s.slots - 1) AS g(i)
JOIN pgcoord.held_locks h ON h.key = pgcoord.semaphore_slot_key(s.semaphore, s.slots, g.i) AND h.granted;

-- Groups with capabilities (Coordinator.JoinGroup, tooz's group API). A row
-- says a member joined a group, with its capabilities (JSON). Membership
-- counts only while the member is running: a member that dies leaves its
-- groups at once for every reader (the live_group_members view joins
-- live_members, whose test is the member lock), whether or not its row is
-- ever deleted. Group names are full names, Prefix+group.
CREATE TABLE pgcoord.group_members (
    group_name   text        NOT NULL,
    member_id    text        NOT NULL,
    capabilities jsonb       NOT NULL DEFAULT 'null',
    joined_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, member_id)
);

CREATE INDEX group_members_member_idx ON pgcoord.group_members (member_id);

-- live_group_members: the members of every group that are running now, with
-- their member rows.
CREATE VIEW pgcoord.live_group_members AS
SELECT g.group_name, g.member_id, g.capabilities, g.joined_at, g.updated_at,
       m.prefix, m.agent_id, m.hostname, m.pid, m.started_at, m.last_heartbeat
FROM pgcoord.group_members g
JOIN pgcoord.live_members m ON m.member_id = g.member_id;

-- Transaction-scoped locks (AcquireTx, AcquireSharedTx, AcquireFencedTx):
-- the advisory lock of a name taken inside the caller's own transaction,
-- released when it ends. They work through a transaction-pooling proxy,
-- where session locks do not.

-- xact_lock takes key's transaction lock, exclusive or shared, and says
-- whether it got it. timeout_ms < 0 tries once, 0 waits without limit (the
-- client's context bounds it), > 0 waits at most that long. The wait runs in
-- the subtransaction of the EXCEPTION block, so a timeout (lock_not_available)
-- rolls back only that block and the caller's transaction stays usable; a
-- lock granted inside the block stays with the caller's transaction. The SET
-- clause restores the caller's lock_timeout when the function returns, so
-- the caller's own setting neither cuts the wait short nor is changed by it.
--
-- A shared request first waits for, then lets go of, the key's writer
-- intent (wait_lock_shared): a Coordinator's writer waiting beyond its session
-- budget holds it, and readers hold off until that writer has had its
-- turn. The intent is taken in a block of its own that is rolled back at
-- once (RAISE into the handler): a transaction lock cannot be released
-- otherwise, and held to the end of the caller's transaction it would keep
-- the writer from taking its intent.
CREATE FUNCTION pgcoord.xact_lock(key bigint, shared boolean, timeout_ms integer) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
    SET lock_timeout = 0
AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + make_interval(secs => greatest(timeout_ms, 0) / 1000.0);
    free boolean := true;
BEGIN
    IF shared THEN
        BEGIN
            IF timeout_ms < 0 THEN
                free := pg_try_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
            ELSE
                IF timeout_ms > 0 THEN
                    PERFORM set_config('lock_timeout', timeout_ms::text || 'ms', true);
                END IF;
                PERFORM pg_advisory_xact_lock_shared(((key >> 32)::integer # 1431655765), key::bit(32)::integer);
            END IF;
            RAISE SQLSTATE 'PGCIR';
        EXCEPTION WHEN SQLSTATE 'PGCIR' THEN
            NULL;
        END;
        IF NOT free THEN
            RETURN false;
        END IF;
    END IF;
    IF timeout_ms < 0 THEN
        IF shared THEN
            RETURN pg_try_advisory_xact_lock_shared(key);
        END IF;
        RETURN pg_try_advisory_xact_lock(key);
    END IF;
    IF timeout_ms > 0 THEN
        PERFORM set_config('lock_timeout',
            greatest(ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000), 1)::bigint::text || 'ms', true);
    END IF;
    IF shared THEN
        PERFORM pg_advisory_xact_lock_shared(key);
    ELSE
        PERFORM pg_advisory_xact_lock(key);
    END IF;
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$;

-- xact_fence takes a fencing token for key and records it in
-- pgcoord.fences inside the caller's transaction (AcquireFencedTx, which
-- calls it only once it holds key's lock). The row stays locked until that
-- transaction ends: a later holder's token waits for it, and a
-- Coordinator's write guarded by pgcoord.fence_ok with an older token no
-- longer lands once it commits. It waits for a transaction that guarded a
-- write with the previous token, as a Coordinator's acquire does.
CREATE FUNCTION pgcoord.xact_fence(key bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
AS $$
#variable_conflict use_column
DECLARE
    new_token bigint := pgcoord.next_token();
BEGIN
    INSERT INTO pgcoord.fences AS f (key, token) VALUES (xact_fence.key, new_token)
    ON CONFLICT (key) DO UPDATE SET token = excluded.token, updated_at = now()
    WHERE f.token < excluded.token;
    RETURN new_token;
END
$$;

-- Deadlock detection across members (see docs/deadlocks.md). A wait that
-- lasts a second (Acquire, AcquireShared, Campaign, Semaphore.Acquire) is
-- published here by its member, with the locks its waiter holds; the row
-- goes when the wait ends. Each member with such a wait reads the table
-- (it is small: only waits past a second are in it) and looks for a cycle.
-- Short waits never write. UNLOGGED: the rows describe waits of live
-- backends, which a crash ends anyway.
CREATE UNLOGGED TABLE pgcoord.long_waits (
    member_id   text        NOT NULL,
    -- wait_id is unique per wait of a process run (a random base plus a
    -- counter), so a restarted member never meets its old rows.
    wait_id     bigint      NOT NULL,
    -- goroutine is the waiting goroutine's id, for operators.
    goroutine   bigint      NOT NULL,
    -- name is what is waited for, as the error names it: a lock's full
    -- name, election "x" or semaphore "x".
    name        text        NOT NULL,
    -- waits_for are the keys the wait would take: one for a lock or an
    -- election, a semaphore's slots (any one will do).
    waits_for   bigint[]    NOT NULL,
    shared      boolean     NOT NULL,
    since       timestamptz NOT NULL,
    -- held_keys and held_shared: the locks the waiter holds (its own
    -- goroutine's, and those of the goroutines blocked waiting for it).
    held_keys   bigint[]    NOT NULL,
    held_shared boolean[]   NOT NULL,
    -- updated_at is refreshed by every check of the member (every 500 ms
    -- while it has a long wait); rows not refreshed for 3 s are ignored,
    -- and deleted after a minute, so a member that died counts for nobody.
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (member_id, wait_id)
);
