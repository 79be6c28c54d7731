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
