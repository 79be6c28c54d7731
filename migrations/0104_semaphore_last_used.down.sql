ALTER TABLE IF EXISTS pgcoord.semaphores DROP COLUMN IF EXISTS last_used;
