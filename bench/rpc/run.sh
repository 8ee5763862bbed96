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
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
SECONDS_PER_LEVEL=${RPC_BENCH_SECONDS:-3}
H2LOAD_N=${RPC_BENCH_H2LOAD_N:-300000}
[ -x "$BUILD/bench/bench_rpc" ] || cmake --build "$BUILD" --target bench_rpc >/dev/null
[ -x "$BUILD/recpipe" ] || cmake --build "$BUILD" --target recpipe >/dev/null
RES="$SRC/bench/results"
mkdir -p "$RES"
TMP=$(mktemp -d)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

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

# 1 + 2: the layer (recpipe ranking: Admin.Status is answered by the layer itself).
"$BUILD/recpipe" ranking --listen 127.0.0.1:0 --port-file "$TMP/port" --log-level warn \
  2>"$TMP/server.log" &
SERVER_PID=$!
wait_port "$TMP/port" "$TMP/server.log"
PORT=$(cat "$TMP/port")
echo "== RPC layer: Admin.Status on 127.0.0.1:$PORT ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$BUILD/bench/bench_rpc" --target "127.0.0.1:$PORT" --seconds "$SECONDS_PER_LEVEL" \
  --inflight 1,8,64 --json "$TMP/client.json"
h2 "$PORT"
L_H2_QPS=$H2_QPS L_H2_MEAN_US=$H2_MEAN_US L_H2_STATUS=$H2_STATUS
stop_server

# 3: the bare C core echo server, same loads.
"$BUILD/bench/bench_rpc" --bare-echo "$TMP/bare_port" 2>"$TMP/bare.log" &
SERVER_PID=$!
wait_port "$TMP/bare_port" "$TMP/bare.log"
BPORT=$(cat "$TMP/bare_port")
echo "== reference: bare gRPC C core echo server on 127.0.0.1:$BPORT (load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$BUILD/bench/bench_rpc" --target "127.0.0.1:$BPORT" --seconds "$SECONDS_PER_LEVEL" \
  --inflight 64 --json "$TMP/bare.json"
h2 "$BPORT"
B_H2_QPS=$H2_QPS
stop_server
H2_QPS=$L_H2_QPS H2_MEAN_US=$L_H2_MEAN_US
H2_OK=false; [ "$L_H2_STATUS" = 0 ] && H2_OK=true

C64=$(sed -n 's/.*"inflight":64,"calls":[0-9]*,"qps":\([0-9]*\).*/\1/p' "$TMP/client.json")
B64=$(sed -n 's/.*"inflight":64,"calls":[0-9]*,"qps":\([0-9]*\).*/\1/p' "$TMP/bare.json")
awk -v c64="${C64:-0}" -v b64="${B64:-0}" -v h2="$H2_QPS" -v bh2="$B_H2_QPS" 'BEGIN {
  printf "  layer vs bare echo, same run: own client at 64 in flight %.0f%%", b64 ? 100 * c64 / b64 : 0;
  if (h2 != "null" && bh2 != "null") printf ", h2load %.0f%%", 100 * h2 / bh2;
  printf "\n  layer vs issue 2 reference: own client %.0f%% of 42,500/s", 100 * c64 / 42500;
  if (h2 != "null") printf ", h2load %.0f%% of 70,000/s", 100 * h2 / 70000;
  printf " (goal >= 80%%)\n" }'

{
  printf '{"section":"rpc","cores":%s,"cpu":"%s","load_average":"%s",' "$(nproc)" \
    "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '"server":"recpipe ranking (default threads, access log off)",'
  printf '"client":%s,' "$(cat "$TMP/client.json")"
  printf '"h2load":{"connections":4,"streams_per_connection":32,"requests":%s,"qps":%s,"mean_us":%s,"grpc_status_checked":%s},' \
    "$H2LOAD_N" "$H2_QPS" "$H2_MEAN_US" "$H2_OK"
  printf '"bare_echo_same_run":{"client":%s,"h2load_qps":%s},' "$(cat "$TMP/bare.json")" "$B_H2_QPS"
  printf '"reference":{"c_core_client_64_inflight_qps":42500,"h2load_qps":70000,"goal_fraction":0.8}}\n'
} >"$RES/rpc.json"
echo "  wrote bench/results/rpc.json"
