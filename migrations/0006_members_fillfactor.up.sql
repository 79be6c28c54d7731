-- Heartbeats update pgcoord.members once a second per member. No index
-- covers last_heartbeat, so each update can be HOT (the new row version on
-- the same page, no index entry to add) when the page has room: leaving 30%
-- of every page free keeps the table from growing under a fleet's
-- heartbeats. Pages filled before this fill up once more and then stay.
ALTER TABLE pgcoord.members SET (fillfactor = 70);
