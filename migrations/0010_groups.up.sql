-- Groups with capabilities (Coordinator.JoinGroup, tooz's group API). A row
-- says a member joined a group, with its capabilities (JSON). Membership
-- counts only while the member is running: a member that dies leaves its
-- groups at once for every reader (the live_group_members view joins
-- live_members, whose test is the member lock), whether or not its row is
-- ever deleted. Group names are full names, Prefix+group.
CREATE TABLE pgcoord.group_members (
    group_name   text        NOT NULL,
    member_id    text        NOT NULL,
    capabilities jsonb       NOT NULL DEFAULT 'null',
    joined_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, member_id)
);

CREATE INDEX group_members_member_idx ON pgcoord.group_members (member_id);

-- live_group_members: the members of every group that are running now, with
-- their member rows.
CREATE VIEW pgcoord.live_group_members AS
SELECT g.group_name, g.member_id, g.capabilities, g.joined_at, g.updated_at,
       m.prefix, m.agent_id, m.hostname, m.pid, m.started_at, m.last_heartbeat
FROM pgcoord.group_members g
JOIN pgcoord.live_members m ON m.member_id = g.member_id;
