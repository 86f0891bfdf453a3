-- The floor service's first schema. Migrations are additive: never drop or rewrite data.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE users (
    org_id          TEXT NOT NULL REFERENCES orgs(id),
    participant_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    email           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, participant_id)
);

CREATE TABLE projects (
    id                  UUID PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs(id),
    name                TEXT NOT NULL,
    slack_channel_id    TEXT,
    slack_channel_name  TEXT,
    visibility          TEXT NOT NULL DEFAULT 'org',
    tags                TEXT[] NOT NULL DEFAULT '{}',
    -- The floor's sequence counter, locked (FOR UPDATE) and bumped inside the append
    -- transaction: concurrent writers, on any node, commit in seq order.
    last_seq            BIGINT NOT NULL DEFAULT 0,
    created_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX projects_tags ON projects USING GIN (tags);

CREATE TABLE project_members (
    project_id      UUID NOT NULL REFERENCES projects(id),
    participant_id  TEXT NOT NULL,
    role            TEXT,
    PRIMARY KEY (project_id, participant_id)
);

CREATE TABLE sessions (
    project_id        UUID NOT NULL REFERENCES projects(id),
    name              TEXT NOT NULL,
    org_id            TEXT NOT NULL,
    driver            TEXT,
    agent             TEXT,
    label             TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    prompt_count      BIGINT NOT NULL DEFAULT 0,
    event_count       BIGINT NOT NULL DEFAULT 0,
    last_activity_at  TIMESTAMPTZ,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE events (
    id           UUID PRIMARY KEY,
    org_id       TEXT NOT NULL,
    project_id   UUID NOT NULL REFERENCES projects(id),
    seq          BIGINT NOT NULL,
    session      TEXT,
    timestamp    TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sender       TEXT NOT NULL,
    -- json, not jsonb: payloads are kept as accepted, including \u0000 escapes that
    -- jsonb refuses (Claude Code transcripts contain them).
    payload      JSON NOT NULL,
    UNIQUE (project_id, seq)
);
CREATE INDEX events_session ON events (project_id, session, seq);

-- Full-text search, filled by the search indexer after the commit and in large batches:
-- computing tsvectors and updating a GIN index inside every append cost ten times the
-- append itself. search_progress records how far each project is indexed.
CREATE TABLE event_search (
    event_id    UUID PRIMARY KEY REFERENCES events(id),
    project_id  UUID NOT NULL,
    search      TSVECTOR NOT NULL
);
CREATE INDEX event_search_gin ON event_search USING GIN (search);

CREATE TABLE search_progress (
    project_id   UUID PRIMARY KEY REFERENCES projects(id),
    indexed_seq  BIGINT NOT NULL
);

CREATE TABLE annotations (
    id              UUID PRIMARY KEY,
    org_id          TEXT NOT NULL,
    project_id      UUID NOT NULL REFERENCES projects(id),
    session         TEXT NOT NULL,
    event_id        UUID,
    participant_id  TEXT,
    kind            TEXT NOT NULL,
    value           TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX annotations_session ON annotations (project_id, session, created_at);
CREATE INDEX annotations_kind ON annotations (org_id, kind, value);
