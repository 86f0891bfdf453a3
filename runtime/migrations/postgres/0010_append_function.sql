-- A plain batch (store::events::postgres) as a function, so its plan is made once per
-- connection instead of at every append: with `plan_cache_mode = force_custom_plan` on
-- every connection (ADR 0004), planning the statement cost more than running it. The
-- function's own settings make its plan generic, and keep that plan on the indexes
-- whatever the tables held when it was made (a generic plan made while `events` was small
-- would scan it sequentially for ever: ADR 0004's reason for custom plans).
CREATE FUNCTION polaris_append_plain(
    p_org text, p_project uuid, p_ids uuid[], p_sessions text[], p_ts timestamptz[],
    p_received timestamptz[], p_sources text[], p_kinds text[], p_senders text[],
    p_payloads text[], p_names text[], p_events bigint[], p_prompts bigint[],
    p_last timestamptz[], p_redactions text[], p_traceparents text[]
) RETURNS bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    base bigint;
BEGIN
    -- The project's row lock orders every writer of the project, on every node; it is
    -- taken only if every session named exists and none of the ids is stored.
    WITH head AS (
        UPDATE projects SET last_seq = last_seq + cardinality(p_ids)
        WHERE id = p_project
          AND (SELECT count(*) FROM sessions WHERE project_id = p_project AND name = ANY(p_names))
              = cardinality(p_names)
          AND NOT EXISTS (SELECT 1 FROM events WHERE id = ANY(p_ids))
        RETURNING last_seq - cardinality(p_ids) AS b),
     ins AS (
        INSERT INTO events (id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload, redactions, traceparent)
        SELECT u.id, p_org, p_project, head.b + u.n, u.session, u.ts, u.ra, u.source, u.kind, u.sender,
               u.payload::json, u.redactions::json, u.traceparent
        FROM head, UNNEST(p_ids, p_sessions, p_ts, p_received, p_sources, p_kinds, p_senders,
                          p_payloads, p_redactions, p_traceparents)
             WITH ORDINALITY AS u(id, session, ts, ra, source, kind, sender, payload, redactions, traceparent, n)
        RETURNING 1),
     counters AS (
        UPDATE sessions s SET event_count = s.event_count + a.n, prompt_count = s.prompt_count + a.p,
               last_activity_at = GREATEST(s.last_activity_at, a.t)
        FROM head, UNNEST(p_names, p_events, p_prompts, p_last) AS a(name, n, p, t)
        WHERE s.project_id = p_project AND s.name = a.name
        RETURNING 1)
    -- Data-modifying WITH clauses run to completion whether read or not.
    SELECT head.b INTO base FROM head;
    RETURN base;
END
$$;
