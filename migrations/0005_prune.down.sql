ALTER TABLE pgcoord.locks DROP COLUMN last_used;
