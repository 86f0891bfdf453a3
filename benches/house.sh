#!/usr/bin/env bash
# Every figure of docs/benchmarks.md for one polaris binary, with its raw RESULT lines.
#
#   benches/house.sh SERVER_BIN OUT_DIR [PARTS]
#
#   SERVER_BIN  the `polaris` binary under test (e.g. target/release/polaris, or an older build)
#   OUT_DIR     where results go: one <part>.jsonl of RESULT lines per part, plus logs
#   PARTS       any of: suite-sqlite suite-pg fanout1k rss agents sidecar (default: all)
#
# Needs: the shared load generator as $PB (see docs/benchmarks.md), PostgreSQL on
# 127.0.0.1:5432 for suite-pg, and the bench clients of this checkout (`cargo bench`
# builds them). Each part starts a fresh server on a fresh database and stops it. Run it
# on a quiet machine: nothing else building or serving.
set -euo pipefail

BIN=$(realpath "${1:?usage: house.sh SERVER_BIN OUT_DIR [PARTS]}")
OUT=$(mkdir -p "${2:?}" && realpath "$2")
PARTS=${3:-"suite-sqlite suite-pg fanout1k rss agents sidecar"}
PB=${PB:?set PB to the shared load generator binary}
SUITE=${SUITE:-../shared/bench/run-api-bench.sh}
REPS=${REPS:-2} DUR=${DUR:-8} PG=${PG:-postgres://postgres@127.0.0.1:5432}
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
cargo build --release --benches --quiet

CONF=$OUT/bench.yaml
printf 'rate_limits: { writes_per_minute: 0, injects_per_minute: 0 }\nlog: { level: warn }\n' >"$CONF"

SPID=""
start() { # start PORT DATA_DIR [extra serve args…]
  local port=$1 dir=$2; shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" --config "$CONF" "$@" >"$dir.log" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not come up" >&2; exit 1
}
stop() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }
fresh_pg() { # a new, empty database for one part
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
}
result() { sed -n 's/^RESULT //p' | tee -a "$OUT/$1.jsonl"; }
bench() { cargo bench --quiet --bench "$@" 2>>"$OUT/bench-stderr.log"; }

for part in $PARTS; do
  echo "== $part" >&2
  case $part in
    suite-sqlite|suite-pg)
      if [ "$part" = suite-pg ]; then fresh_pg housebench; export DATABASE_URL=$PG/housebench; fi
      start 4700 "$OUT/$part-data"
      PB=$PB REPS=$REPS DUR=$DUR WARMUP=2 PAUSE=2 QUIET=0 SEED_EVENTS=20000 OUT="$OUT/$part" \
        "$SUITE" http://127.0.0.1:4700 "$SPID" >"$OUT/$part.log" 2>&1
      cp "$OUT/$part/results.jsonl" "$OUT/$part.jsonl"
      stop; unset DATABASE_URL ;;
    fanout1k)
      start 4700 "$OUT/$part-data"
      "$PB" setup --base http://127.0.0.1:4700 --project fanout --session f1 >/dev/null
      for scope in project session; do
        "$PB" fanout --base http://127.0.0.1:4700 --project fanout --session f1 --scope $scope \
          --subs 1000 --events 200 --interval-ms 50 --pid "$SPID" | result "$part"
      done
      stop ;;
    rss)
      start 4700 "$OUT/$part-data"
      echo "{\"test\":\"rss_idle\",\"rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$SPID/status)}" | tee -a "$OUT/$part.jsonl"
      bench session_rss -- --base http://127.0.0.1:4700 --pid "$SPID" --sessions 10000 --project created | result "$part"
      bench session_rss -- --base http://127.0.0.1:4700 --pid "$SPID" --sessions 10000 --project live --events | result "$part"
      stop ;;
    agents)
      start 4700 "$OUT/$part-data" --agents benches/agents-bench.yaml
      bench agent_latency -- --base http://127.0.0.1:4700 --floors 100 --questions 2000 --rate 100 | result "$part"
      stop ;;
    sidecar)
      start 4700 "$OUT/$part-data"
      HOME_DIR=$OUT/$part-home; rm -rf "$HOME_DIR"
      "$BIN" sidecar --listen 127.0.0.1:4701 --home "$HOME_DIR" --floor http://127.0.0.1:4700 >"$OUT/$part-sidecar.log" 2>&1 &
      SC=$!
      for _ in $(seq 100); do curl -sf http://127.0.0.1:4701/healthz >/dev/null && break; sleep 0.1; done
      curl -s -XPOST 127.0.0.1:4701/connect -H "x-polaris-daemon-secret: $(cat "$HOME_DIR/daemon.secret")" \
        -d '{"ccSessionId": "3f1c2d9e-bench", "project": "bench", "user": "user:manu"}' >/dev/null
      bench hook_wall -- --n 1000 --port 4701 --home "$HOME_DIR" --bin "$BIN" | result "$part"
      kill "$SC"; wait "$SC" 2>/dev/null || true
      stop
      bench sidecar_ack -- --mode ack --clients 64 --events 100000 | result "$part"
      bench sidecar_ack -- --mode drain --events 100000 | result "$part" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
echo "results in $OUT" >&2
