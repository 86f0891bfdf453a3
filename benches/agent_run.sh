#!/usr/bin/env bash
# `polaris agent run` as a container runs it: two Dean processes (active and standby) beside
# one `polaris serve` on SQLite. Measures
#   - take-over: from the active one dying (kill -9) or stopping (SIGTERM) until the
#     standby's GET /readyz answers 200 (it holds the lease and its streams are open);
#   - rss_kib: resident memory of an idle `agent run` (the active one, on one floor, after
#     it answered one question), read from /proc.
# One RESULT line per measurement.
#
#   benches/agent_run.sh POLARIS_BIN [RUNS]
#
# Needs curl and jq.
set -euo pipefail

BIN=$(realpath "${1:?usage: agent_run.sh POLARIS_BIN [RUNS]}")
RUNS=${2:-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
SECRET=bench-secret-0123456789abcdef0123456789
FLOOR=127.0.0.1:4721

POLARIS_JWT_SECRET=$SECRET "$BIN" serve --listen $FLOOR --data-dir "$WORK/floor" \
  --agents "$HERE/examples/dean/agents.yaml" >"$WORK/floor.log" 2>&1 &
for _ in $(seq 200); do curl -sf "$FLOOR/healthz" >/dev/null && break; sleep 0.05; done
export DEAN_TOKEN; DEAN_TOKEN=$(POLARIS_JWT_SECRET=$SECRET "$BIN" token --org default --participant agent:dean)
MANU=$(POLARIS_JWT_SECRET=$SECRET "$BIN" token --org default --participant user:manu)
api() { curl -sf -H "authorization: Bearer $MANU" -H 'content-type: application/json' "$@"; }
api -XPOST "$FLOOR/projects" -d '{"name": "warehouse", "tags": ["data"]}' >/dev/null
api -XPOST "$FLOOR/projects/warehouse/sessions" -d '{"name": "s-1", "driver": "user:manu"}' >/dev/null

# Knowledge and the example warehouse are found relative to the agents file, as in the
# image; the warehouse database goes to the process's own state directory.
mkdir -p "$WORK/etc"
cp -r "$HERE/examples/." "$WORK/etc/"
declare -A PID PORT
start() { # start NAME PORT
  local state="$WORK/$1"
  mkdir -p "$state"
  sed "s#/var/lib/polaris-agent#$state#" "$HERE/examples/dean/agents.yaml" >"$WORK/etc/dean/agents-$1.yaml"
  POLARIS_LOG=warn "$BIN" agent run agent:dean --floor "http://$FLOOR" --token env:DEAN_TOKEN \
    --agents "$WORK/etc/dean/agents-$1.yaml" --state "$state" --listen "127.0.0.1:$2" \
    >>"$WORK/$1.log" 2>&1 &
  PID[$1]=$! PORT[$1]=$2
  for _ in $(seq 200); do curl -s "127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.025; done
  echo "agent $1 did not come up" >&2; exit 1
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:${PORT[$1]}/readyz")" = 200 ]; }
standing_by() { curl -s "127.0.0.1:${PORT[$1]}/readyz" | jq -e '.agents.leases_wanted == 1 and .agents.leases_held == 0' >/dev/null; }
wait_until() { local what=$1; shift; for _ in $(seq 800); do "$@" && return; sleep 0.01; done; echo "timed out waiting for $what" >&2; exit 1; }
now_ms() { date +%s%3N; }

start a 4731
wait_until "a ready" ready a
q=$(api -XPOST "$FLOOR/projects/warehouse/sessions/s-1/events" \
  -d '{"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "b", "prompt": "@dean which tables hold PII?"}}' | jq -r .id)
answered() { api "$FLOOR/projects/warehouse/sessions/s-1/messages" | jq -e --arg q "$q" 'any(.[]; .payload.in_reply_to == $q)' >/dev/null; }
wait_until "the answer" answered
sleep 5
st() { awk -v k="$1:" '$1 == k {print $2}' "/proc/${PID[a]}/status"; }
echo "RESULT {\"test\":\"agent_run_rss\",\"rss_kib\":$(st VmRSS),\"anon_kib\":$(st RssAnon),\"file_kib\":$(st RssFile),\"hwm_kib\":$(st VmHWM)}"

active=a standby=b
declare -A PORTS=([a]=4731 [b]=4732)
for run in $(seq "$RUNS"); do
  for sig in KILL TERM; do
    start $standby "${PORTS[$standby]}"
    wait_until "the standby to wait" standing_by $standby
    t0=$(now_ms)
    kill -s $sig "${PID[$active]}"
    while ! ready $standby; do sleep 0.002; done
    t1=$(now_ms)
    status=0; wait "${PID[$active]}" 2>/dev/null || status=$?
    echo "RESULT {\"test\":\"agent_run_takeover\",\"run\":$run,\"signal\":\"$sig\",\"ms\":$((t1 - t0)),\"exit\":$status}"
    tmp=$active active=$standby standby=$tmp
  done
done
