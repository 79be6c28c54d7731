DROP VIEW IF EXISTS pgcoord.semaphore_holders;
DROP FUNCTION IF EXISTS pgcoord.semaphore_slot_key(text, integer, integer);
DROP TABLE IF EXISTS pgcoord.semaphores;
