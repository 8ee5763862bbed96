#!/bin/sh
# bench/rpc/run.sh BUILD_DIR — unary QPS and latency of Admin.Status through the RPC layer
# on loopback, client and server sharing this machine's cores:
#   1. the project's client (bench_rpc: rp_async, one thread, one connection) at 1, 8 and
#      64 calls in flight, p50/p99 from a histogram;
#   2. h2load (nghttp2-client), 4 connections x 32 streams, after checking once with
#      `nghttp -v` that the answer really carries grpc-status: 0 (h2load sees only HTTP 200);
#   3. the same two loads against a bare gRPC C core echo server (bench_rpc --bare-echo:
#      no layer at all) measured in the same run, so that the layer's share of the raw
#      rate does not depend on what else the machine is doing.
# The server is `recpipe ranking` (no bundle; Admin.Status is answered by the layer) with
# its default threads (one per core) and the access log off. Reference on a 2-core machine
# like this one (issue 2): a bare gRPC C core echo server answers ~40-45k calls/s to a
# C-core client with 64 in flight and ~70k/s to h2load; the goal is >= 80% of those.
# Writes bench/results/rpc.json.
set -e
. "$(dirname "$0")/../lib.sh"
bench_init rpc "${1:-build}"
SECONDS_PER_LEVEL=${RPC_BENCH_SECONDS:-3}
H2LOAD_N=${RPC_BENCH_H2LOAD_N:-300000}
[ -x "$BUILD/bench/bench_rpc" ] || cmake --build "$BUILD" --target bench_rpc >/dev/null
SERVER_PID="" BARE_PID=""
bench_on_exit() {
  for p in $SERVER_PID $BARE_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

wait_port() { # FILE LOG
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1)); [ $i -gt 500 ] && { echo "bench/rpc: server did not start:"; cat "$2"; exit 1; }
    sleep 0.01
  done
}

# h2load PORT NAME: sets H2_QPS, H2_MEAN_US, H2_STATUS
h2() {
  H2_QPS=null H2_MEAN_US=null H2_STATUS=null
  command -v h2load >/dev/null && command -v nghttp >/dev/null || {
    echo "  h2load/nghttp not installed (Debian nghttp2-client): skipped"; return 0; }
  # An empty StatusRequest, gRPC-framed: not compressed, length 0.
  printf '\000\000\000\000\000' >"$TMP/body"
  URL="http://127.0.0.1:$1/recpipe.v1.Admin/Status"
  nghttp -v -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$TMP/body" "$URL" >"$TMP/nghttp.txt" 2>&1 || true
  H2_STATUS=$(sed -n 's/.*grpc-status: \([0-9]*\).*/\1/p' "$TMP/nghttp.txt" | head -1)
  if [ "$H2_STATUS" != 0 ]; then
    echo "  nghttp -v did not show grpc-status 0; skipping h2load:"; cat "$TMP/nghttp.txt"
    H2_STATUS=null; return 0
  fi
  echo "  nghttp -v: grpc-status 0 in the trailers (the h2load requests are real gRPC calls)"
  h2load -n "$H2LOAD_N" -c 4 -m 32 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$TMP/body" "$URL" >"$TMP/h2load.txt" 2>&1 || true
  H2_QPS=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$TMP/h2load.txt")
  H2_MEAN_US=$(awk '/^time for request:/ { v=$5; u=v; gsub(/[0-9.]/,"",u); gsub(/[a-z]/,"",v);
                    if (u=="ms") v*=1000; else if (u=="s") v*=1000000; print v }' "$TMP/h2load.txt")
  H2_DONE=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$TMP/h2load.txt")
  echo "  h2load -c 4 -m 32 -n $H2LOAD_N: ${H2_QPS:-?} req/s, mean ${H2_MEAN_US:-?} us, ${H2_DONE:-?} succeeded"
  [ -n "$H2_QPS" ] || { H2_QPS=null; cat "$TMP/h2load.txt"; }
  [ -n "$H2_MEAN_US" ] || H2_MEAN_US=null
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
}

calls_of() { sed -n 's/.*"inflight":64,"calls":\([0-9]*\).*/\1/p' "$1"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# CPU microseconds the server process spent per call: less sensitive than rates to
# what else runs on the machine.
us_per_call() { awk -v t="$1" -v c="$2" -v hz="$HZ" 'BEGIN { if (c > 0) printf "%.1f", t * 1e6 / hz / c; else print "null" }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || a == "") print b; else if (b == "null" || b == "" || a + 0 <= b + 0) print a; else print b }'; }
qps_of() { sed -n 's/.*"inflight":64,"calls":[0-9]*,"qps":\([0-9]*\).*/\1/p' "$1"; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || a == "") print b; else if (b == "null" || b == "" || a + 0 >= b + 0) print a; else print b }'; }

# Both servers run side by side; the loads alternate between them, best of ROUNDS, so
# that other work on the machine hits both alike.
ROUNDS=${RPC_BENCH_ROUNDS:-3}
"$BUILD/recpipe" ranking --listen 127.0.0.1:0 --port-file "$TMP/port" --log-level warn \
  2>"$TMP/server.log" &
SERVER_PID=$!
"$BUILD/bench/bench_rpc" --bare-echo "$TMP/bare_port" 2>"$TMP/bare.log" &
BARE_PID=$!
wait_port "$TMP/port" "$TMP/server.log"
wait_port "$TMP/bare_port" "$TMP/bare.log"
PORT=$(cat "$TMP/port")
BPORT=$(cat "$TMP/bare_port")

# 1: the layer at 1, 8 and 64 in flight (latencies from this run).
echo "== RPC layer: Admin.Status served by recpipe ranking on 127.0.0.1:$PORT ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$BUILD/bench/bench_rpc" --target "127.0.0.1:$PORT" --seconds "$SECONDS_PER_LEVEL" \
  --inflight 1,8,64 --json "$TMP/client.json"

# 2 + 3: 64 in flight and h2load, layer and bare echo alternating.
echo "== layer vs bare gRPC C core echo server (127.0.0.1:$BPORT), alternating, best of $ROUNDS"
L_US=null B_US=null
C64=$(qps_of "$TMP/client.json") B64=null H2_QPS=null B_H2_QPS=null L_H2_MEAN_US=null L_H2_STATUS=null
r=0
while [ $r -lt "$ROUNDS" ]; do
  r=$((r + 1))
  t0=$(ticks "$SERVER_PID")
  "$BUILD/bench/bench_rpc" --target "127.0.0.1:$PORT" --seconds 2 --inflight 64 --json "$TMP/l.json" >/dev/null
  t1=$(ticks "$SERVER_PID")
  b0=$(ticks "$BARE_PID")
  "$BUILD/bench/bench_rpc" --target "127.0.0.1:$BPORT" --seconds 2 --inflight 64 --json "$TMP/b.json" >/dev/null
  b1=$(ticks "$BARE_PID")
  LUS=$(us_per_call $((t1 - t0)) "$(calls_of "$TMP/l.json")")
  BUS=$(us_per_call $((b1 - b0)) "$(calls_of "$TMP/b.json")")
  L_US=$(min "$L_US" "$LUS")
  B_US=$(min "$B_US" "$BUS")
  C64=$(max "$C64" "$(qps_of "$TMP/l.json")")
  B64=$(max "$B64" "$(qps_of "$TMP/b.json")")
  echo "  round $r, own client, 64 in flight: layer $(qps_of "$TMP/l.json")/s ($LUS us server CPU per call), bare $(qps_of "$TMP/b.json")/s ($BUS us)"
  h2 "$PORT" >"$TMP/h2l.txt"
  [ "$H2_STATUS" = 0 ] && L_H2_STATUS=0
  [ "$H2_MEAN_US" != null ] && L_H2_MEAN_US=$H2_MEAN_US
  L=$H2_QPS
  h2 "$BPORT" >"$TMP/h2b.txt"
  B=$H2_QPS
  [ $r -eq 1 ] && grep nghttp "$TMP/h2l.txt"
  echo "  round $r, h2load -c 4 -m 32 -n $H2LOAD_N: layer $L req/s, bare $B req/s"
  H2_QPS=$(max "$H2_QPS_BEST" "$L"); H2_QPS_BEST=$H2_QPS
  B_H2_QPS=$(max "$B_H2_BEST" "$B"); B_H2_BEST=$B_H2_QPS
done
kill "$BARE_PID" 2>/dev/null; wait "$BARE_PID" 2>/dev/null || true
stop_server
H2_MEAN_US=$L_H2_MEAN_US
H2_OK=false; [ "$L_H2_STATUS" = 0 ] && H2_OK=true

awk -v c64="${C64:-0}" -v b64="${B64:-0}" -v h2="$H2_QPS" -v bh2="$B_H2_QPS" -v lus="$L_US" -v bus="$B_US" 'BEGIN {
  if (lus != "null" && bus != "null")
    printf "  server CPU per call (best round): layer %.1f us, bare echo %.1f us: the layer runs at %.0f%% of the bare rate per core\n", lus, bus, 100 * bus / lus;
  printf "  best of the runs: own client at 64 in flight %.0f/s (bare echo %.0f/s)", c64, b64;
  if (h2 != "null") printf ", h2load %.0f/s (bare echo %.0f/s)", h2, bh2;
  printf "\n  layer vs bare echo, same run: own client at 64 in flight %.0f%%", b64 ? 100 * c64 / b64 : 0;
  if (h2 != "null" && bh2 != "null") printf ", h2load %.0f%%", 100 * h2 / bh2;
  printf "\n  layer vs issue 2 reference: own client %.0f%% of 42,500/s", 100 * c64 / 42500;
  if (h2 != "null") printf ", h2load %.0f%% of 70,000/s", 100 * h2 / 70000;
  printf " (goal >= 80%%)\n" }'

{
  printf '{"section":"rpc","cores":%s,"cpu":"%s","load_average":"%s",' "$(nproc)" \
    "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '"server":"recpipe ranking (default threads, access log off)",'
  printf '"client":%s,' "$(cat "$TMP/client.json")"
  printf '"best_of_%s_rounds":{"client_64_inflight_qps":%s,"h2load_qps":%s},' "$ROUNDS" "$C64" "$H2_QPS"
  printf '"h2load":{"connections":4,"streams_per_connection":32,"requests":%s,"qps":%s,"mean_us":%s,"grpc_status_checked":%s},' \
    "$H2LOAD_N" "$H2_QPS" "$H2_MEAN_US" "$H2_OK"
  printf '"bare_echo_best_of_rounds":{"client_64_inflight_qps":%s,"h2load_qps":%s},' "$B64" "$B_H2_QPS"
  printf '"server_cpu_us_per_call":{"layer":%s,"bare_echo":%s},' "$L_US" "$B_US"
  printf '"reference":{"c_core_client_64_inflight_qps":42500,"h2load_qps":70000,"goal_fraction":0.8}}\n'
} >"$OUT/rpc.json"
echo "  wrote bench/results/rpc.json"
