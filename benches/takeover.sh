#!/usr/bin/env bash
# Lease take-over between two `polaris serve` nodes on one PostgreSQL: the time from the
# holder of Dean's lease dying (kill -9) or stopping cleanly (SIGTERM) until the other node
# holds it. One RESULT line per case.
#
#   benches/takeover.sh SERVER_BIN [RUNS]
#
# Needs PostgreSQL on 127.0.0.1:5432 ($PG), curl and jq. Each run starts the active node,
# then the standby (whose keeper is then waiting: `polaris_lease_waiters 1` on /metrics),
# stops the active one and polls the standby's GET /agents/agent:dean/lease every ~2 ms.
set -euo pipefail

BIN=$(realpath "${1:?usage: takeover.sh SERVER_BIN [RUNS]}")
RUNS=${2:-5}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS takeoverbench WITH (FORCE)" -c "CREATE DATABASE takeoverbench" >/dev/null
printf 'log: { level: warn }\n' >"$WORK/conf.yaml"

declare -A PID
start() { # start PORT
  DATABASE_URL=$PG/takeoverbench "$BIN" serve --listen "127.0.0.1:$1" --data-dir "$WORK/$1" \
    --config "$WORK/conf.yaml" --agents "$HERE/examples/agents.yaml" >>"$WORK/$1.log" 2>&1 &
  PID[$1]=$!
  for _ in $(seq 200); do curl -sf "127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.05; done
  echo "node $1 did not come up" >&2; exit 1
}
lease() { curl -s "127.0.0.1:$1/agents/agent:dean/lease"; }
wait_until() { # wait_until DESCRIPTION COMMAND…
  local what=$1; shift
  for _ in $(seq 400); do "$@" && return; sleep 0.025; done
  echo "timed out waiting for $what" >&2; exit 1
}
holds() { [ "$(lease "$1" | jq -r '.held')" = true ]; }
waiting() { curl -s "127.0.0.1:$1/metrics" | grep -q '^polaris_lease_waiters 1$'; }
now_ms() { date +%s%3N; }

active=4711 standby=4712
start $active
# Dean runs (and so holds his lease) only where he is on a floor.
curl -sf -XPOST 127.0.0.1:$active/projects -d '{"name": "warehouse", "tags": ["data"]}' >/dev/null
wait_until "the first node to hold the lease" holds $active
for run in $(seq "$RUNS"); do
  for sig in KILL TERM; do
    start $standby
    wait_until "the standby to wait" waiting $standby
    before=$(lease $active | jq -r '.holder')
    t0=$(now_ms)
    kill -s $sig "${PID[$active]}"
    while :; do
      l=$(lease $standby)
      if [ "$(jq -r '.held' <<<"$l")" = true ] && [ "$(jq -r '.holder' <<<"$l")" != "$before" ]; then break; fi
      sleep 0.002
    done
    t1=$(now_ms)
    wait "${PID[$active]}" 2>/dev/null || true
    echo "RESULT {\"test\":\"lease_takeover\",\"run\":$run,\"signal\":\"$sig\",\"ms\":$((t1 - t0)),\"term\":$(jq .term <<<"$l")}"
    tmp=$active active=$standby standby=$tmp
  done
done
