-- The trace context of an event (a W3C traceparent, `00-<trace id>-<span id>-<flags>`), so
-- that each node's relay and an agent's answer join the trace of the event they follow
-- (ADR 0020). NULL for events written without one: older events, and events written
-- while no node traced and no client sent one.
ALTER TABLE events ADD COLUMN traceparent TEXT;
