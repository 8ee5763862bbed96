#!/bin/sh
# bench/backlog/run.sh BUILD_DIR — the gateway's memory through backlogs: does it come
# back after calls pile up?
#
#   services: `recpipe serve` on the ml-latest-small bundle (default flags);
#   load:     `recpipe loadtest --rpc mix` (Recommend 90 %, Feedback 10 %) open loop at
#             BACKLOG_RATE (default 3,000/s) for 240 s;
#   backlogs: the gateway is stopped (SIGSTOP) for BACKLOG_STALL_S (0.5 s) at t = 60,
#             90, 120, 150 and 180 s, so ~1,500 calls queue each time;
#   → the gateway's anonymous memory (/proc/PID/smaps_rollup) every second, with its
#     calls in flight and the answers its cache holds (Admin.Status): the median of
#     t = 45-60 s (the cache full at 3,000/s: its 10,000 answers take ~40 s; the output
#     says how many it held), the peak, and the median of the last 20 s (40 s after the
#     last backlog); failed calls.
# The memory in use does not change across a backlog (the calls finish); what a heap
# cannot give back after one shows here as the end against the start.
# Writes bench/results/backlog.json. Takes about 4 minutes.
set -eu
. "$(dirname "$0")/../lib.sh"
bench_init backlog "${1:-build}"
RATE=${BACKLOG_RATE:-3000}
STALL=${BACKLOG_STALL_S:-0.5}
LTPID=""
bench_on_exit() {
  [ -n "$LTPID" ] && kill "$LTPID" 2>/dev/null || true
  # A gateway caught in a SIGSTOP must run again to act on the SIGTERM serve sends it.
  [ -n "${GPID:-}" ] && kill -CONT "$GPID" 2>/dev/null || true
}

echo "building the ml-latest-small bundle"
bench_import --tags "$D/tags.csv"
"$BIN" build --data "$TMP/ml" --out "$TMP/a" --version backlog --seed 1 --eval=false >"$TMP/build.log" 2>&1
bench_serve "$TMP/a"

"$BIN" loadtest --target 127.0.0.1:$GP --rpc mix --mix recommend=0.9,feedback=0.1 \
  --dataset "$TMP/ml" --bundle "$TMP/a" --connections 2 --deadline-ms 1000 --rate "$RATE" \
  --warmup 0s --duration 240s --json "$TMP/lt.json" >"$TMP/lt.out" 2>&1 &
LTPID=$!
T0=$(date +%s)
NEXT_STALL=60
STALLS=0
: >"$TMP/samples.txt"
while kill -0 "$LTPID" 2>/dev/null; do
  T=$(($(date +%s) - T0))
  anon=$(awk '/^Anonymous:/ { print $2 }' "/proc/$GPID/smaps_rollup" 2>/dev/null || echo 0)
  st=$("$BIN" status --target 127.0.0.1:$GP --timeout 1s 2>/dev/null |
       awk '/^calls/ { f = $(NF - 2) } /^cache/ { c = $2 } END { print (f == "" ? -1 : f), (c == "" ? 0 : c) }')
  echo "$T $anon $st" >>"$TMP/samples.txt"
  if [ "$T" -ge "$NEXT_STALL" ] && [ "$STALLS" -lt 5 ]; then
    kill -STOP "$GPID"; sleep "$STALL"; kill -CONT "$GPID"
    STALLS=$((STALLS + 1))
    echo "  t=${T}s: gateway stopped for ${STALL} s"
    NEXT_STALL=$((NEXT_STALL + 30))
  fi
  sleep 1
done
wait "$LTPID" || true
LTPID=""

$PY - "$TMP" "$OUT/backlog.json" "$RATE" "$STALL" "$STALLS" <<'EOF'
import json, statistics, sys
tmp, out, rate, stall, stalls = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rows = []
for l in open(tmp + "/samples.txt"):
    f = l.split()
    if len(f) == 4:
        rows.append({"t": int(f[0]), "anon_kb": int(f[1]), "in_flight": int(f[2]), "cache_entries": int(f[3])})
lt = json.load(open(tmp + "/lt.json"))
st = lt.get("status", {})
failed = sum(v for k, v in st.items() if k != "OK")
def med(a, b):
    v = [r["anon_kb"] for r in rows if a <= r["t"] < b]
    return statistics.median(v) if v else None
tend = rows[-1]["t"] if rows else 0
before, end = med(45, 60), med(tend - 19, tend + 1)
cache_before = max((r["cache_entries"] for r in rows if 45 <= r["t"] < 60), default=0)
peak = max((r["anon_kb"] for r in rows), default=0)
res = {"bench": "backlog", "rate": rate, "stall_s": stall, "stalls": stalls,
       "calls": lt["summary"]["measured"], "failed_calls": failed, "status": st,
       "latency_ms": lt["latency_ms"],
       "cache_entries_before": cache_before, "anon_kb_before": before, "anon_kb_peak": peak, "anon_kb_end": end,
       "growth_pct": 100.0 * (end - before) / before if before and end else None,
       "max_in_flight": max((r["in_flight"] for r in rows), default=0), "samples": rows}
json.dump(res, open(out, "w"), indent=1)
print("gateway anonymous memory: %.1f MB before the first backlog (t=45-60 s, %d answers cached), "
      "peak %.1f MB, %.1f MB at the end (last 20 s): %+.1f%% after %d backlogs of %.1f s at %.0f calls/s"
      % (before / 1024, cache_before, peak / 1024, end / 1024, res["growth_pct"] or 0, stalls, stall, rate))
print("calls %d, failed %d %s; most in flight seen %d; p50 %.2f ms p99 %.2f ms"
      % (res["calls"], failed, st, res["max_in_flight"], lt["latency_ms"]["p50"], lt["latency_ms"]["p99"]))
print("bench/backlog: wrote", out)
EOF
