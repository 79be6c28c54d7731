DROP FUNCTION IF EXISTS pgcoord.take_term(text, bigint, text, text, bigint);
