-- Dashboard sign-in: one-time login links and the cookie sessions they open. Both live here,
-- not in a node's memory, so any node of a deployment accepts a link or a cookie made on
-- another. Only SHA-256 hashes of link tokens and session ids are stored: a copy of the
-- database signs nobody in.

CREATE TABLE login_links (
    token_hash      TEXT PRIMARY KEY,     -- hex SHA-256 of the token in the link
    org_id          TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    role            TEXT NOT NULL,        -- member, admin, service
    created_at      INTEGER NOT NULL,     -- milliseconds since the epoch
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER               -- set once, by the one request that signs in
);

CREATE TABLE web_sessions (
    id_hash         TEXT PRIMARY KEY,     -- hex SHA-256 of the cookie's value
    org_id          TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    role            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
CREATE INDEX login_links_expiry ON login_links (expires_at);
