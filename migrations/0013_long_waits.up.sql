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
