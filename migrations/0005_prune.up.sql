-- Retention (Config.Retention, `pgcoord prune`): a name's registration
-- records when a coordinator last registered it, so that names nobody uses
-- any more can be deleted without breaking collision detection for names in
-- use. Existing rows count as used now: pruning starts a retention later.
ALTER TABLE pgcoord.locks ADD COLUMN last_used timestamptz NOT NULL DEFAULT now();
