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
