-- The Slack bridge: which channel shows which floor, which thread which session, and how
-- far the bridge has posted each floor. Links are by Slack id, so renames on either side
-- keep them.

CREATE TABLE slack_links (
    org_id      TEXT NOT NULL,
    team_id     TEXT NOT NULL,        -- the Slack workspace
    project_id  UUID NOT NULL REFERENCES projects(id),
    session     TEXT NOT NULL,        -- '' for the project's channel, else the session's thread
    channel_id  TEXT NOT NULL,
    thread_ts   TEXT,                 -- the session thread's first message
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, team_id, project_id, session)
);
CREATE INDEX slack_links_channel ON slack_links (team_id, channel_id, thread_ts);

-- Posted through `seq`. `pending` is the post under way (JSON): after a crash it is the one
-- post in doubt, checked against the channel once before it is made again.
CREATE TABLE slack_cursors (
    org_id      TEXT NOT NULL,
    team_id     TEXT NOT NULL,
    project_id  UUID NOT NULL REFERENCES projects(id),
    seq         BIGINT NOT NULL,
    pending     TEXT,
    PRIMARY KEY (org_id, team_id, project_id)
);
