DROP VIEW IF EXISTS pgcoord.leaders;
DROP FUNCTION IF EXISTS pgcoord.end_term(text, bigint);
DROP FUNCTION IF EXISTS pgcoord.proclaim(text, bigint, text);
DROP FUNCTION IF EXISTS pgcoord.begin_term(text, bigint, text, text, bigint);
DROP TABLE IF EXISTS pgcoord.elections;
