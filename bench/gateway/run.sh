#!/bin/sh
# bench/gateway/run.sh BUILD_DIR — the gateway's latency and cost, on the ml-latest-small
# bundle (and, with RECPIPE_BENCH_LARGE=1, on a 1M-item synthetic bundle).
#
#   services: one retrieval shard and the gateway as separate processes on loopback
#             (ranking joins when `recpipe ranking --bundle` serves the bundle);
#   state:    Feedback from `recpipe loadtest --rpc feedback` for the dataset's users;
#   1. closed loop, 16 in flight, cache off (TTL 1 ms)        → the maximum rate
#   2. open loop at 25 %, 50 %, 75 % of it (Poisson)          → p50 / p99
#   3. CPU seconds per call of each process during (1)         → the gateway's share
#   4. one user, one call in flight, cache on                  → cache-hit p50 (goal < 0.3 ms)
# Client and services share the machine's cores: rates are what this machine gives.
# Writes bench/results/gateway.json. Takes about 2 minutes (more with the large bundle).
set -eu
. "$(dirname "$0")/../lib.sh"
bench_init gateway "${1:-build}"

cpu_s() { awk '{ printf "%.3f", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
jget() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$@"; }

# run_case NAME DATA_DIR BUNDLE_DIR: measures one bundle; appends a JSON object to $TMP/cases
run_case() {
  NAME=$1; DATA=$2; BUNDLE=$3
  RP=$(free_port); GP=$(free_port); CP=$(free_port); KP=$(free_port)
  "$BIN" retrieval --bundle "$BUNDLE" --listen 127.0.0.1:$RP --threads 2 --log-level warn 2>"$TMP/retrieval.log" &
  RPID=$!; bench_track "$RPID"
  RANK=""
  KPID=""
  if "$BIN" ranking --help 2>/dev/null | grep -q -- '--bundle'; then
    "$BIN" ranking --bundle "$BUNDLE" --listen 127.0.0.1:$KP --threads 2 --log-level warn 2>"$TMP/ranking.log" &
    KPID=$!; bench_track "$KPID"; RANK=127.0.0.1:$KP
  fi
  # Gateway without a useful cache (TTL 1 ms) for the pipeline figures...
  "$BIN" gateway --bundle "$BUNDLE" --state "$TMP/state-$NAME" --listen 127.0.0.1:$GP \
    --retrieval 127.0.0.1:$RP --ranking "$RANK" --cache-ttl 1ms --default-deadline 1s \
    --log-level warn 2>"$TMP/gateway.log" &
  GPID=$!; bench_track "$GPID"
  # ...and one with the default cache for the hit path, sharing nothing but the bundle.
  "$BIN" gateway --bundle "$BUNDLE" --state "$TMP/state-$NAME-c" --listen 127.0.0.1:$CP \
    --retrieval 127.0.0.1:$RP --ranking "$RANK" --log-level warn 2>"$TMP/gateway-c.log" &
  CPID=$!; bench_track "$CPID"
  bench_wait_up retrieval 127.0.0.1:$RP "$RPID"; bench_wait_up gateway 127.0.0.1:$GP "$GPID"
  bench_wait_up gateway-c 127.0.0.1:$CP "$CPID"
  if [ -n "$RANK" ] && ! "$BIN" status --target "$RANK" >/dev/null 2>&1; then
    echo "ranking did not start on this bundle: retrieval order"
    RANK=""
  fi
  LT="--dataset $DATA --bundle $BUNDLE --connections 2 --threads 1 --deadline-ms 1000"
  echo "[$NAME] seeding user histories with Feedback"
  "$BIN" loadtest --target 127.0.0.1:$GP --rpc feedback $LT --concurrency 8 --max-calls 3000 \
    --warmup 0s --duration 60s --json "$TMP/seed.json" >/dev/null

  echo "[$NAME] closed loop, 16 in flight, cache off"
  G0=$(cpu_s $GPID); R0=$(cpu_s $RPID); K0=0; [ -n "$KPID" ] && K0=$(cpu_s $KPID)
  "$BIN" loadtest --target 127.0.0.1:$GP --rpc recommend $LT --concurrency 16 --warmup 2s \
    --duration 10s --json "$TMP/max.json" >/dev/null
  G1=$(cpu_s $GPID); R1=$(cpu_s $RPID); K1=0; [ -n "$KPID" ] && K1=$(cpu_s $KPID)
  MAX=$(jget "$TMP/max.json" "['summary']['achieved_rate']")
  echo "  max rate $MAX calls/s (p50 $(jget "$TMP/max.json" "['latency_ms']['p50']") ms, errors $(jget "$TMP/max.json" "['summary']['errors']"))"
  for pct in 25 50 75; do
    RATE=$($PY -c "print(max(1.0, $MAX * $pct / 100))")
    "$BIN" loadtest --target 127.0.0.1:$GP --rpc recommend $LT --rate "$RATE" --arrivals poisson \
      --warmup 2s --duration 10s --json "$TMP/open$pct.json" >/dev/null
    echo "  $pct% ($RATE/s): p50 $(jget "$TMP/open$pct.json" "['latency_ms']['p50']") ms, p99 $(jget "$TMP/open$pct.json" "['latency_ms']['p99']") ms, errors $(jget "$TMP/open$pct.json" "['summary']['errors']")"
  done
  echo "[$NAME] cache hits: one user, one call in flight"
  "$BIN" loadtest --target 127.0.0.1:$CP --rpc recommend --users 1 --concurrency 1 --connections 1 \
    --warmup 1s --duration 5s --json "$TMP/hit.json" >/dev/null
  HIT=$(jget "$TMP/hit.json" "['latency_ms']['p50']")
  echo "  cache-hit p50 $HIT ms"
  $PY - "$TMP" "$NAME" "$MAX" "$HIT" "$G0" "$G1" "$R0" "$R1" "$K0" "$K1" "${RANK:-}" >>"$TMP/cases" <<'EOF'
import json, sys
tmp, name, mx, hit, g0, g1, r0, r1, k0, k1, rank = sys.argv[1:12]
mx_all = json.load(open(tmp + "/max.json"))
mxj = {"summary": mx_all["summary"], "latency_ms": mx_all["latency_ms"]}
calls = mx_all["summary"].get("ok") or 0
gw, ret, rk = float(g1) - float(g0), float(r1) - float(r0), float(k1) - float(k0)
case = {"bundle": name, "ranking": bool(rank), "max_rate": float(mx), "max_run": mxj,
        "open_loop": {}, "cache_hit_p50_ms": float(hit),
        "cpu_seconds_during_max_run": {"gateway": gw, "retrieval": ret, "ranking": rk},
        "gateway_cpu_over_downstream": gw / (ret + rk) if ret + rk > 0 else None}
if calls:
    case["cpu_us_per_call"] = {"gateway": 1e6 * gw / calls, "retrieval": 1e6 * ret / calls,
                               "ranking": 1e6 * rk / calls}
for p in (25, 50, 75):
    o = json.load(open("%s/open%d.json" % (tmp, p)))
    case["open_loop"]["%d%%" % p] = {"summary": o["summary"], "latency_ms": o["latency_ms"]}
print(json.dumps(case))
EOF
  $PY -c "
import json,sys
c=json.loads(open('$TMP/cases').read().splitlines()[-1])
print('  CPU during the max run: gateway %.2f s, retrieval %.2f s, ranking %.2f s -> gateway/downstream %s' % (
  c['cpu_seconds_during_max_run']['gateway'], c['cpu_seconds_during_max_run']['retrieval'],
  c['cpu_seconds_during_max_run']['ranking'], c['gateway_cpu_over_downstream']))"
  for p in $GPID $CPID $RPID $KPID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  BENCH_PIDS=""
}

echo "building the ml-latest-small bundle"
bench_import --tags "$D/tags.csv"
"$BIN" build --data "$TMP/ml" --out "$TMP/ml-bundle" --eval=false >/dev/null 2>&1
run_case ml-latest-small "$TMP/ml" "$TMP/ml-bundle"

if [ "${RECPIPE_BENCH_LARGE:-0}" = 1 ]; then
  echo "building a 1M-item synthetic bundle (several minutes)"
  "$BIN" synth --items 1000000 --users 100000 --dim 64 --out "$TMP/big" >/dev/null
  "$BIN" build --data "$TMP/big" --out "$TMP/big-bundle" --eval=false --iters 3 >/dev/null 2>&1
  run_case synthetic-1M "$TMP/big" "$TMP/big-bundle"
else
  echo "(the 1M-item case runs with RECPIPE_BENCH_LARGE=1)"
fi

$PY - "$TMP/cases" "$OUT/gateway.json" <<'EOF'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"bench": "gateway", "cases": cases}, open(sys.argv[2], "w"), indent=1)
print("bench/gateway: wrote", sys.argv[2])
EOF
