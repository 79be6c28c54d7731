ALTER TABLE pgcoord.members RESET (fillfactor);
