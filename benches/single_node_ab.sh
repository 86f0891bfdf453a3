#!/usr/bin/env bash
# The single-node table of issue 17 for two builds, alternated in one sitting: ingest at
# 1 / 16 / 64 clients (~1 KB hook payloads), fan-out to 100 and 1,000 project subscribers
# at 20 events/s, and RSS 12 s and 30 s after they have left — on SQLite and on
# PostgreSQL, each run on a fresh server and database.
#
#   benches/single_node_ab.sh BEFORE_BIN AFTER_BIN OUT_DIR [ROUNDS] [STORES]
#
#   ROUNDS  before/after pairs per store (default 2); STORES: "sqlite pg" (default)
#
# Needs the shared load generator as $PB (see docs/benchmarks.md) and PostgreSQL on
# 127.0.0.1:5432. Writes OUT_DIR/<store>-<build>-<round>.jsonl (the load generator's
# RESULT lines, each tagged with build, store and round). Run it on a quiet machine.
set -euo pipefail

BEFORE=$(realpath "${1:?usage: single_node_ab.sh BEFORE_BIN AFTER_BIN OUT_DIR [ROUNDS] [STORES]}")
AFTER=$(realpath "${2:?}")
OUT=$(mkdir -p "${3:?}" && realpath "$3")
ROUNDS=${4:-2}
STORES=${5:-"sqlite pg"}
PB=${PB:?set PB to the shared load generator binary}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DUR=${DUR:-10} WARMUP=${WARMUP:-2}
PORT=4710
BASE=http://127.0.0.1:$PORT

CONF=$OUT/bench.yaml
printf 'rate_limits: { writes_per_minute: 0, injects_per_minute: 0 }\nlog: { level: warn }\n' >"$CONF"

SPID=""
start() { # start BIN DATA_DIR
  rm -rf "$2"; mkdir -p "$2"
  "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$2" --config "$CONF" >"$2.log" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && return; sleep 0.1; done
  echo "server did not come up (see $2.log)" >&2; exit 1
}
stop() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }

one() { # one BUILD_NAME BIN STORE ROUND
  local name=$1 bin=$2 store=$3 round=$4 file="$OUT/$3-$1-$4.jsonl"
  if [ "$store" = pg ]; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS abbench" -c "CREATE DATABASE abbench" >/dev/null
    export DATABASE_URL=$PG/abbench
  fi
  start "$bin" "$OUT/data-$store-$name-$round"
  tag() { sed -n 's/^RESULT //p' | python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r.update(build=sys.argv[1], store=sys.argv[2], round=int(sys.argv[3])); print(json.dumps(r))' "$name" "$store" "$round" | tee -a "$file" | cut -c1-200; }
  "$PB" setup --base "$BASE" --project bench --session ingest >/dev/null
  for c in 1 16 64; do
    sleep 2
    "$PB" ingest --base "$BASE" --project bench --session ingest --conc "$c" --duration "$DUR" \
      --warmup "$WARMUP" --pid "$SPID" | tag
  done
  "$PB" setup --base "$BASE" --project fanout --session f1 >/dev/null
  for subs in 100 1000; do
    sleep 2
    "$PB" fanout --base "$BASE" --project fanout --session f1 --scope project --subs "$subs" \
      --events 200 --interval-ms 50 --pid "$SPID" | tag
  done
  # The subscribers have left: RSS after jemalloc's purge and the metrics upkeep (5 s),
  # and again once idle SQLite connections have been closed (10-20 s, ADR 0027).
  sleep 12
  echo "{\"test\":\"rss_after_fanout\",\"rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$SPID/status),\"build\":\"$name\",\"store\":\"$store\",\"round\":$round}" | tee -a "$file"
  sleep 18
  echo "{\"test\":\"rss_after_fanout_30s\",\"rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$SPID/status),\"build\":\"$name\",\"store\":\"$store\",\"round\":$round}" | tee -a "$file"
  stop
  unset DATABASE_URL
}

for store in $STORES; do
  for r in $(seq 1 "$ROUNDS"); do
    one before "$BEFORE" "$store" "$r"
    one after "$AFTER" "$store" "$r"
  done
done
echo "done: $OUT" >&2
