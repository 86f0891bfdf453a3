-- Ingest-time redaction: credentials in an event's payload are replaced by typed
-- placeholders before the commit, unless an admin turned the policy off for the project.
ALTER TABLE projects ADD COLUMN redact_secrets BOOLEAN NOT NULL DEFAULT TRUE;

-- The key of the org's redaction hashes (hex), made on first use; never leaves the server.
ALTER TABLE orgs ADD COLUMN redaction_key TEXT;

-- What was redacted from an event (a JSON array of {kind, path, at, hash}); NULL for none.
ALTER TABLE events ADD COLUMN redactions JSON;
