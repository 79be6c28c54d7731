-- take_term records a new term as begin_term does (only when its token is
-- newer than the recorded one; then it notifies observers), and also says
-- which term it replaced: its member, token and whether it resigned (all
-- null when the election had none). A successor decides whether it owes
-- its predecessor a grace from the term it read before writing its own
-- (see Election.begin), and a predecessor's term can be recorded between
-- that read and this write: the predecessor won the lock, its session died
-- before its term committed, and the successor was granted the lock and
-- read the term before. The replaced term tells the successor so.
--
-- The row is read FOR UPDATE, which waits for a predecessor's write under
-- way and reads what it committed; a first term inserted meanwhile makes
-- the insert fail on the key, and the loop then reads it the same way.
-- Under READ COMMITTED (the library's) that read sees it; under a snapshot
-- older than it (REPEATABLE READ) no read would, so a second conflict
-- fails with a serialization failure, as INSERT ... ON CONFLICT does there.
-- begin_term stays, for coordinators of older versions.
CREATE FUNCTION pgcoord.take_term(p_election text, p_key bigint, p_member_id text, p_value text, p_token bigint,
                                  OUT since timestamptz, OUT replaced_member text,
                                  OUT replaced_token bigint, OUT replaced_resigned boolean)
LANGUAGE plpgsql VOLATILE STRICT AS $$
DECLARE
    old pgcoord.elections;
    conflicts integer := 0;
BEGIN
    LOOP
        SELECT * INTO old FROM pgcoord.elections e WHERE e.election = p_election FOR UPDATE;
        IF FOUND THEN
            replaced_member := old.member_id;
            replaced_token := old.token;
            replaced_resigned := old.resigned_at IS NOT NULL;
            IF old.token >= p_token THEN
                RETURN; -- a newer term is recorded: since is null
            END IF;
            UPDATE pgcoord.elections e
            SET key = p_key, member_id = p_member_id, value = p_value, token = p_token,
                since = now(), resigned_at = NULL
            WHERE e.election = p_election
            RETURNING e.since INTO since;
            EXIT;
        END IF;
        BEGIN
            INSERT INTO pgcoord.elections AS e (election, key, member_id, value, token, since, resigned_at)
            VALUES (p_election, p_key, p_member_id, p_value, p_token, now(), NULL)
            RETURNING e.since INTO since;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- A first term committed meanwhile: read it as above.
            conflicts := conflicts + 1;
            IF conflicts > 1 THEN
                RAISE EXCEPTION 'pgcoord.take_term: election %: a term recorded meanwhile is not visible to this transaction', p_election
                    USING ERRCODE = 'serialization_failure';
            END IF;
        END;
    END LOOP;
    PERFORM pg_notify('pgcoord_leader', p_key::text);
END
$$;
