#!/usr/bin/env bash
# What exporting traces costs ingest: the same binary with telemetry off and on (every trace
# kept, sent to a sink that answers 200 at once), alternated, a fresh SQLite floor per run.
#
#   benches/trace_overhead.sh SERVER_BIN OUT_DIR
#
# Needs the shared load generator as $PB (docs/benchmarks.md): its `ingest` drives the
# floor and its `trivial-server` is the sink. Prints and keeps one RESULT line per run in
# OUT_DIR/trace_overhead.jsonl, each tagged with its mode and round.
set -euo pipefail

BIN=$(realpath "${1:?usage: trace_overhead.sh SERVER_BIN OUT_DIR}")
OUT=$(mkdir -p "${2:?}" && realpath "$2")
PB=${PB:?set PB to the shared load generator binary}
ROUNDS=${ROUNDS:-3} DUR=${DUR:-8} CONCS=${CONCS:-"1 16 64"}
PORT=4710 SINK=127.0.0.1:4718

"$PB" trivial-server --addr "$SINK" >"$OUT/sink.log" 2>&1 &
SINK_PID=$!
trap 'kill $SINK_PID 2>/dev/null || true' EXIT

for mode in off on; do
  conf=$OUT/$mode.yaml
  printf 'rate_limits: { writes_per_minute: 0, injects_per_minute: 0 }\nlog: { level: warn }\n' >"$conf"
  if [ $mode = on ]; then
    printf 'telemetry: { otlp_endpoint: "http://%s", service_name: bench, sample_ratio: 1.0 }\n' "$SINK" >>"$conf"
  fi
done

for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    dir=$OUT/data-$mode-$round
    rm -rf "$dir"; mkdir -p "$dir"
    env -u OTEL_EXPORTER_OTLP_ENDPOINT "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" \
      --config "$OUT/$mode.yaml" >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
    "$PB" setup --base "http://127.0.0.1:$PORT" --project bench --session s >/dev/null
    for c in $CONCS; do
      "$PB" ingest --base "http://127.0.0.1:$PORT" --project bench --session s --conc "$c" \
        --duration "$DUR" --warmup 2 --rotate 0 --pid "$pid" |
        sed -n "s/^RESULT {/{\"mode\":\"$mode\",\"round\":$round,/p" | tee -a "$OUT/trace_overhead.jsonl"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
