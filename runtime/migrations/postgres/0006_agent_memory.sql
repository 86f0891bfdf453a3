-- What agents remember: facts, each with the events it came from. `project_id` is the
-- scope: the floor, for an agent with `context: isolated` (nothing crosses floors), or NULL
-- for a shared agent's memory across all its floors.

CREATE TABLE agent_memory (
    id             UUID PRIMARY KEY,
    org_id         TEXT NOT NULL,
    agent_id       TEXT NOT NULL,     -- 'agent:dean'
    project_id     UUID REFERENCES projects(id),
    fact           TEXT NOT NULL,
    source_events  TEXT NOT NULL,     -- JSON array of event ids
    origin         TEXT NOT NULL,     -- 'remember', 'tool' or 'decision'
    author         TEXT,              -- who asked for it to be kept
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_memory_agent ON agent_memory (org_id, agent_id, project_id, created_at);
