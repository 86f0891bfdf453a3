-- The floor service's first schema. Migrations are additive: never drop or rewrite data.
-- Times are INTEGER milliseconds since the Unix epoch (UTC); ids are UUID text.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Humans and agents seen in an org (a token used, a member added). No password: identity
-- comes from signed tokens.
CREATE TABLE users (
    org_id          TEXT NOT NULL REFERENCES orgs(id),
    participant_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    email           TEXT,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, participant_id)
);

CREATE TABLE projects (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES orgs(id),
    name                TEXT NOT NULL,
    slack_channel_id    TEXT,
    slack_channel_name  TEXT,
    visibility          TEXT NOT NULL DEFAULT 'org',
    tags                TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    -- The floor's sequence counter: the seq of the newest event. Read and bumped inside the
    -- append transaction, so commit order equals seq order.
    last_seq            INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE project_members (
    project_id      TEXT NOT NULL REFERENCES projects(id),
    participant_id  TEXT NOT NULL,
    role            TEXT,
    PRIMARY KEY (project_id, participant_id)
);

CREATE TABLE sessions (
    project_id        TEXT NOT NULL REFERENCES projects(id),
    name              TEXT NOT NULL,
    org_id            TEXT NOT NULL,
    driver            TEXT,
    agent             TEXT,
    label             TEXT,
    created_at        INTEGER NOT NULL,
    -- Maintained by the append transaction, so listing sessions never scans events.
    prompt_count      INTEGER NOT NULL DEFAULT 0,
    event_count       INTEGER NOT NULL DEFAULT 0,
    last_activity_at  INTEGER,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE events (
    rowid        INTEGER PRIMARY KEY,          -- shared with events_fts
    id           TEXT NOT NULL UNIQUE,         -- chosen by the first writer: retries are no-ops
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    seq          INTEGER NOT NULL,
    session      TEXT,                         -- NULL for floor-wide events (join, leave)
    timestamp    INTEGER NOT NULL,             -- the writer's clock
    received_at  INTEGER NOT NULL,             -- the server's clock at arrival
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sender       TEXT NOT NULL,
    payload      TEXT NOT NULL,                -- JSON, stored exactly as accepted
    UNIQUE (project_id, seq)
);
CREATE INDEX events_session ON events (project_id, session, seq);

-- Full-text search lives in a second file beside this one (see store/sqlite.rs), so the
-- search indexer never holds the write lock that appends need.

CREATE TABLE annotations (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL,
    project_id      TEXT NOT NULL REFERENCES projects(id),
    session         TEXT NOT NULL,
    event_id        TEXT,
    participant_id  TEXT,
    kind            TEXT NOT NULL,
    value           TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX annotations_session ON annotations (project_id, session, created_at);
CREATE INDEX annotations_kind ON annotations (org_id, kind, value);
