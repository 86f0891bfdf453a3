#!/usr/bin/env bash
# Time from `@dean take: …` on the floor to the task's first step there: one `polaris
# serve` (SQLite, tokens on, its concierge turning takes into hand-overs) and Dean as
# `polaris agent run` (embedded sidecar). Each run writes a take into a session and waits
# for the task's Stop; the times are the floor's own `received_at` stamps, so polling adds
# nothing: take → task event (the hand-over), take → Dean's prompt (step 0), take → the
# first tool result (step 1). One RESULT line per run.
#
#   benches/take_first_step.sh POLARIS_BIN [RUNS]
#
# Needs curl and jq.
set -euo pipefail

BIN=$(realpath "${1:?usage: take_first_step.sh POLARIS_BIN [RUNS]}")
RUNS=${2:-10}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SECRET=bench-secret-0123456789abcdef0123456789
FLOOR=127.0.0.1:4741

mkdir -p "$WORK/etc" "$WORK/dean"
cp -r "$HERE/examples/." "$WORK/etc/"
sed "s#/var/lib/polaris-agent#$WORK/dean#" "$HERE/examples/dean/agents.yaml" >"$WORK/etc/dean/agents.yaml"
POLARIS_JWT_SECRET=$SECRET "$BIN" serve --listen $FLOOR --data-dir "$WORK/floor" \
  --agents "$WORK/etc/dean/agents.yaml" >"$WORK/floor.log" 2>&1 &
for _ in $(seq 200); do curl -sf "$FLOOR/healthz" >/dev/null && break; sleep 0.05; done
export DEAN_TOKEN; DEAN_TOKEN=$(POLARIS_JWT_SECRET=$SECRET "$BIN" token --org default --participant agent:dean)
MANU=$(POLARIS_JWT_SECRET=$SECRET "$BIN" token --org default --participant user:manu)
api() { curl -sf -H "authorization: Bearer $MANU" -H 'content-type: application/json' "$@"; }
api -XPOST "$FLOOR/projects" -d '{"name": "warehouse", "tags": ["data"]}' >/dev/null
POLARIS_LOG=warn "$BIN" agent run agent:dean --floor "http://$FLOOR" --token env:DEAN_TOKEN \
  --agents "$WORK/etc/dean/agents.yaml" --state "$WORK/dean" --listen 127.0.0.1:4742 >"$WORK/dean.log" 2>&1 &
for _ in $(seq 400); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:4742/readyz)" = 200 ] && break; sleep 0.025; done

ms() { date -d "$1" +%s%3N; }
for run in $(seq "$RUNS"); do
  s="ask-$run"
  api -XPOST "$FLOOR/projects/warehouse/sessions" -d "{\"name\": \"$s\", \"driver\": \"user:manu\"}" >/dev/null
  take=$(api -XPOST "$FLOOR/projects/warehouse/sessions/$s/events" \
    -d "{\"sender\": \"user:manu\", \"payload\": {\"hook_event_name\": \"UserPromptSubmit\", \"session_id\": \"b\", \"prompt\": \"@dean take: PII audit of the warehouse ($run)\"}}")
  take_id=$(jq -r .id <<<"$take"); take_at=$(jq -r .received_at <<<"$take")
  task=""
  for _ in $(seq 400); do
    task=$(api "$FLOOR/projects/warehouse/sessions/$s/messages" | jq -r --arg q "$take_id" '.[] | select(.payload.in_reply_to == $q) | .payload.task_id // empty')
    [ -n "$task" ] && break; sleep 0.01
  done
  tsession=""
  for _ in $(seq 1000); do
    t=$(api "$FLOOR/projects/warehouse/agents/dean/tasks/$task")
    [ "$(jq -r .status <<<"$t")" = done ] && tsession=$(jq -r .session <<<"$t") && break
    sleep 0.01
  done
  ev=$(api "$FLOOR/projects/warehouse/sessions/$tsession/messages")
  task_at=$(jq -r --arg t "$task" '.[] | select(.kind == "task" and .id == $t) | .received_at' <<<"$ev")
  step0=$(jq -r --arg t "$task" '[.[] | select(.payload.task_id == $t and .kind == "UserPromptSubmit")][0].received_at' <<<"$ev")
  step1=$(jq -r --arg t "$task" '[.[] | select(.payload.task_id == $t and .kind == "PostToolUse")][0].received_at' <<<"$ev")
  stop=$(jq -r --arg t "$task" '[.[] | select(.payload.task_id == $t and .kind == "Stop")][0].received_at' <<<"$ev")
  t0=$(ms "$take_at")
  echo "RESULT {\"test\":\"take_first_step\",\"run\":$run,\"handover_ms\":$(( $(ms "$task_at") - t0 )),\"prompt_ms\":$(( $(ms "$step0") - t0 )),\"first_tool_ms\":$(( $(ms "$step1") - t0 )),\"done_ms\":$(( $(ms "$stop") - t0 ))}"
done
