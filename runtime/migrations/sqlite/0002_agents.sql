-- Named agents: the agents table (API-defined agents, merged with agents.yaml), floor
-- memberships, and each agent's read position on each floor.

CREATE TABLE agents (
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    id          TEXT NOT NULL,
    spec        TEXT NOT NULL,        -- AgentSpec as JSON; secrets only as references
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);

-- Who is on which floor and why. A row with removed = TRUE keeps an agent off a floor its
-- tags match, after someone removed it by hand. Rows change only in the transaction of
-- the join/leave event that records the change.
CREATE TABLE agent_floors (
    project_id  TEXT NOT NULL REFERENCES projects(id),
    agent_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,        -- 'tag' or 'invite'
    detail      TEXT,                 -- the matching tag, or who invited / removed it
    removed     BOOLEAN NOT NULL DEFAULT FALSE,
    since       INTEGER NOT NULL,
    PRIMARY KEY (project_id, agent_id)
);

CREATE TABLE agent_cursors (
    org_id      TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    seq         INTEGER NOT NULL,
    PRIMARY KEY (org_id, agent_id, project_id)
);
