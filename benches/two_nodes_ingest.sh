#!/usr/bin/env bash
# Aggregate ingest of two `polaris serve` nodes on one PostgreSQL against one node, in one
# sitting (issue 17, item 6): the shared load generator's ~1 KB hook payloads, N clients in
# all — on one node, then split half and half over two nodes writing the same session (so
# the database orders both nodes' writers on one project row), then half and half on two
# projects (no shared row).
#
#   benches/two_nodes_ingest.sh POLARIS_BIN OUT_DIR [CLIENTS] [ROUNDS]
#
# Needs the shared load generator as $PB and PostgreSQL on 127.0.0.1:5432. Writes
# OUT_DIR/results.jsonl (RESULT lines tagged with the layout, node and round).
set -euo pipefail

BIN=$(realpath "${1:?usage: two_nodes_ingest.sh POLARIS_BIN OUT_DIR [CLIENTS] [ROUNDS]}")
OUT=$(mkdir -p "${2:?}" && realpath "$2")
CLIENTS=${3:-64}
ROUNDS=${4:-2}
PB=${PB:?set PB to the shared load generator binary}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DUR=${DUR:-10} WARMUP=${WARMUP:-2}
HALF=$((CLIENTS / 2))

CONF=$OUT/bench.yaml
printf 'rate_limits: { writes_per_minute: 0, injects_per_minute: 0 }\nlog: { level: warn }\n' >"$CONF"

PIDS=()
start() { # start PORT NAME
  mkdir -p "$OUT/$2"
  DATABASE_URL=$PG/twonodes "$BIN" serve --listen "127.0.0.1:$1" --data-dir "$OUT/$2" --config "$CONF" >"$OUT/$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
  echo "node on $1 did not come up" >&2; exit 1
}
stop_all() { kill "${PIDS[@]}" 2>/dev/null || true; wait "${PIDS[@]}" 2>/dev/null || true; PIDS=(); }
fresh() { psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS twonodes" -c "CREATE DATABASE twonodes" >/dev/null; }
tag() { # tag LAYOUT NODE ROUND
  sed -n 's/^RESULT //p' | python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r.update(layout=sys.argv[1], node=sys.argv[2], round=int(sys.argv[3])); print(json.dumps(r))' "$@" \
    | tee -a "$OUT/results.jsonl" | cut -c1-160
}
ingest() { # ingest PORT PROJECT CONC
  "$PB" ingest --base "http://127.0.0.1:$1" --project "$2" --session ingest --conc "$3" \
    --duration "$DUR" --warmup "$WARMUP"
}

pair() { # pair LAYOUT ROUND PROJECT_ON_A PROJECT_ON_B: two nodes, half the clients each, at once
  fresh; start 4720 "$1-a-$2"; start 4721 "$1-b-$2"
  "$PB" setup --base http://127.0.0.1:4720 --project "$3" --session ingest >/dev/null 2>&1
  "$PB" setup --base http://127.0.0.1:4721 --project "$4" --session ingest >/dev/null 2>&1
  ingest 4720 "$3" "$HALF" >"$OUT/a.tmp" & local a=$!
  ingest 4721 "$4" "$HALF" >"$OUT/b.tmp" & local b=$!
  wait $a $b
  tag "$1" a "$2" <"$OUT/a.tmp"; tag "$1" b "$2" <"$OUT/b.tmp"
  stop_all
}

for r in $(seq 1 "$ROUNDS"); do
  fresh; start 4720 one-$r
  "$PB" setup --base http://127.0.0.1:4720 --project bench --session ingest >/dev/null 2>&1
  ingest 4720 bench "$CLIENTS" | tag one-node a "$r"
  stop_all

  pair two-nodes-one-session "$r" bench bench
  pair two-nodes-two-projects "$r" bench bench2
done
rm -f "$OUT/a.tmp" "$OUT/b.tmp"
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys, collections
agg = collections.defaultdict(lambda: collections.defaultdict(float))
for l in open(sys.argv[1]):
    r = json.loads(l)
    agg[r["layout"]][r["round"]] += r["events_per_s"]
for layout, rounds in agg.items():
    print(f"{layout}: " + ", ".join(f"{v:,.0f}/s" for _, v in sorted(rounds.items())))
PY
