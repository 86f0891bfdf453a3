-- Leases: work that must run once in a deployment (a named agent, a Slack bridge) is done
-- by whoever holds its lease. `term` grows with every new holder and fences writes: a
-- write made under an older term is refused. A released lease keeps its row (and term),
-- with `expires_at` in the past.

CREATE TABLE leases (
    org_id      TEXT NOT NULL,
    name        TEXT NOT NULL,        -- what is leased, e.g. 'agent:dean'
    holder      TEXT NOT NULL,        -- the instance holding it (chosen by that instance)
    term        BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, name)
);
