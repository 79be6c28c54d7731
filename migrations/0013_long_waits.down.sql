DROP TABLE IF EXISTS pgcoord.long_waits;
