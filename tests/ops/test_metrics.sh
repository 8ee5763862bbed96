#!/usr/bin/env bash
# test_metrics: real `recpipe retrieval` and `recpipe ranking` processes with
# --metrics-listen 127.0.0.1:0 over a small bundle built here; a few calls (Status, Health
# through `recpipe status`, Reload refused and accepted with the admin token); the
# /metrics scrape passes `promtool check metrics`, the call counters moved, the bundle
# info gauge names the version, process metrics are there; user-id pseudonyms; a second
# scrape shows the counters grew; the gateway under load (stage histograms, degradation
# reasons, feedback events); TLS and mutual TLS from the CLI, gateway → retrieval over mTLS.
set -euo pipefail
B=${RECPIPE_BIN:?RECPIPE_BIN is the recpipe binary}
T=$(mktemp -d /tmp/recpipe-metrics.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

command -v promtool >/dev/null || fail "promtool is not installed (Debian package prometheus)"
command -v curl >/dev/null || fail "curl is not installed"

# A small dataset: 200 users, two genres of 60 items each.
awk 'BEGIN{print "movieId,title,genres"; for(i=1;i<=120;i++) printf "%d,Item %d,%s\n", i, i, (i<=60?"Action":"Drama")}' > "$T/movies.csv"
awk 'BEGIN{srand(7); print "userId,movieId,rating,timestamp"; for(u=1;u<=200;u++){g=(u%2); for(e=0;e<30;e++){i=int(rand()*rand()*60)+1+(g?60:0); if(rand()<0.2) i=int(rand()*120)+1; printf "%d,%d,%.1f,%d\n",u,i,3+int(rand()*5)/2,1500000000+u*1000+e}}}' > "$T/ratings.csv"
"$B" import --ratings "$T/ratings.csv" --items "$T/movies.csv" --out "$T/data" > "$T/import.log" 2>&1 || fail "import"
"$B" build --data "$T/data" --out "$T/bundle" --factors 8 --iters 4 --eval=false > "$T/build.log" 2>&1 || fail "build"
printf 's3cret-token\n' > "$T/token"
printf 'wrong-token\n' > "$T/wrong"

# start NAME ARGS...: runs `recpipe NAME ARGS` in the background, waits for both ports.
start() {
    local name=$1; shift
    local pf=(--port-file "$T/$name.port")
    [ "$name" = gateway ] && pf=()  # the gateway logs its port only
    "$B" "$name" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --threads 2 \
        --admin-token-file "$T/token" "${pf[@]}" "$@" > "$T/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        grep -q '"port":' "$T/$name.log" && grep -q '"metrics_port"' "$T/$name.log" &&
            grep -q 'is now SERVING' "$T/$name.log" && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || fail "$name exited"
        sleep 0.05
    done
    fail "$name did not start"
}
mport() { grep -o '"metrics_port":[0-9]*' "$T/$1.log" | head -1 | cut -d: -f2; }

start retrieval --bundle "$T/bundle"
start ranking --bundle "$T/bundle"

for svc in retrieval ranking; do
    port=$(grep -o '"port":[0-9]*' "$T/$svc.log" | head -1 | cut -d: -f2)
    for _ in 1 2 3; do "$B" status --target "127.0.0.1:$port" > /dev/null || fail "$svc status"; done
    # Reload without the token: UNAUTHENTICATED; wrong token: PERMISSION_DENIED; right: OK.
    if "$B" reload --targets "127.0.0.1:$port" > "$T/r1.out" 2>&1; then fail "$svc reload without a token succeeded"; fi
    grep -q UNAUTHENTICATED "$T/r1.out" || fail "$svc reload without token: $(cat "$T/r1.out")"
    if "$B" reload --targets "127.0.0.1:$port" --token-file "$T/wrong" > "$T/r2.out" 2>&1; then fail "$svc reload with a wrong token succeeded"; fi
    grep -q PERMISSION_DENIED "$T/r2.out" || fail "$svc reload wrong token: $(cat "$T/r2.out")"
    "$B" reload --targets "127.0.0.1:$port" --token-file "$T/token" > "$T/r3.out" 2>&1 || fail "$svc reload with the token: $(cat "$T/r3.out")"

    mp=$(mport "$svc")
    curl -sf -m 5 -D "$T/$svc.hdr" "http://127.0.0.1:$mp/metrics" > "$T/$svc.prom" || fail "$svc scrape"
    grep -qi '^content-type: text/plain; version=0.0.4' "$T/$svc.hdr" || fail "$svc content type"
    promtool check metrics < "$T/$svc.prom" > "$T/$svc.promtool" 2>&1 || { cat "$T/$svc.promtool"; fail "$svc promtool"; }
    grep -q "recpipe_rpc_calls_total{service=\"$svc\",method=\"/recpipe.v1.Admin/Status\",code=\"OK\"} 3" "$T/$svc.prom" || fail "$svc Status counter"
    grep -q "recpipe_rpc_calls_total{service=\"$svc\",method=\"/recpipe.v1.Admin/Reload\",code=\"UNAUTHENTICATED\"} 1" "$T/$svc.prom" || fail "$svc UNAUTHENTICATED counter"
    grep -q "recpipe_rpc_calls_total{service=\"$svc\",method=\"/recpipe.v1.Admin/Reload\",code=\"PERMISSION_DENIED\"} 1" "$T/$svc.prom" || fail "$svc PERMISSION_DENIED counter"
    grep -q "recpipe_rpc_calls_total{service=\"$svc\",method=\"/recpipe.v1.Admin/Reload\",code=\"OK\"} 1" "$T/$svc.prom" || fail "$svc Reload OK counter"
    grep -q "recpipe_rpc_duration_seconds_count{service=\"$svc\",method=\"/recpipe.v1.Admin/Status\"} 3" "$T/$svc.prom" || fail "$svc duration count"
    grep -q "recpipe_bundle_info{service=\"$svc\",version=\"[^\"]\+\"} 1" "$T/$svc.prom" || fail "$svc bundle info"
    grep -q "recpipe_serving{service=\"$svc\"} 1" "$T/$svc.prom" || fail "$svc serving gauge"
    grep -q "recpipe_rpc_in_flight{service=\"$svc\"} 0" "$T/$svc.prom" || fail "$svc in flight"
    grep -Eq '^process_resident_memory_bytes [1-9][0-9]{6,}$' "$T/$svc.prom" || fail "$svc resident memory"
    grep -Eq '^process_start_time_seconds [0-9]' "$T/$svc.prom" || fail "$svc start time"
    grep -Eq '^process_cpu_seconds_total [0-9]' "$T/$svc.prom" || fail "$svc cpu seconds"
done
grep -Eq 'recpipe_bundle_items\{service="retrieval"\} [1-9]' "$T/retrieval.prom" || fail "retrieval item count"
grep -Eq '^recpipe_index_bytes\{service="retrieval"\} [1-9]' "$T/retrieval.prom" || fail "retrieval index size"
grep -q 'recpipe_bundle_reloads_total{service="retrieval"} 1' "$T/retrieval.prom" || fail "retrieval reload counter"
grep -Eq '^recpipe_bundle_loaded_timestamp_seconds\{service="retrieval"\} 1[0-9]{9}' "$T/retrieval.prom" || fail "bundle load timestamp"
grep -Eq '^recpipe_bundle_reload_duration_seconds\{service="retrieval"\} [0-9.e-]+$' "$T/retrieval.prom" || fail "bundle reload duration"

# The counters move between scrapes.
port=$(cat "$T/retrieval.port")
"$B" status --target "127.0.0.1:$port" > /dev/null
curl -sf -m 5 "http://127.0.0.1:$(mport retrieval)/metrics" > "$T/again.prom" || fail "second scrape"
grep -q 'recpipe_rpc_calls_total{service="retrieval",method="/recpipe.v1.Admin/Status",code="OK"} 4' "$T/again.prom" || fail "Status counter did not move"
# The gateway: Recommend and Feedback from the load generator, stage histograms,
# degradation reasons, feedback events, cache counters; user ids pseudonymized in logs.
start gateway --bundle "$T/bundle" --state "$T/state" --retrieval "127.0.0.1:$(cat "$T/retrieval.port")" \
    --log-level debug
gp=$(grep -o '"port":[0-9]*' "$T/gateway.log" | head -1 | cut -d: -f2)
"$B" loadtest --target "127.0.0.1:$gp" --rate 100 --duration 1s --warmup 0 --users 300 --items 120 \
    --rpc mix > "$T/loadtest.log" 2>&1 || fail "loadtest against the gateway"
curl -sf -m 5 "http://127.0.0.1:$(mport gateway)/metrics" > "$T/gateway.prom" || fail "gateway scrape"
# `recpipe status` shows the user state's size (Feedback stored events above).
"$B" status --target "127.0.0.1:$gp" > "$T/gwstatus.out" || fail "gateway status"
grep -Eq '^state +[1-9][0-9]* users, [1-9][0-9]* events held$' "$T/gwstatus.out" ||
    fail "gateway status has no user state line: $(cat "$T/gwstatus.out")"
promtool check metrics < "$T/gateway.prom" > "$T/gateway.promtool" 2>&1 || { cat "$T/gateway.promtool"; fail "gateway promtool"; }
grep -Eq 'recpipe_gateway_stage_duration_seconds_count\{stage="total"\} [1-9]' "$T/gateway.prom" || fail "gateway total stage histogram"
grep -Eq 'recpipe_gateway_stage_duration_seconds_count\{stage="retrieval"\} [1-9]' "$T/gateway.prom" || fail "gateway retrieval stage histogram"
grep -Eq 'recpipe_gateway_degraded_total\{reason="cold_start"\} [1-9]' "$T/gateway.prom" || fail "gateway cold-start counter"
grep -Eq 'recpipe_feedback_events_total\{service="gateway"\} [1-9]' "$T/gateway.prom" || fail "gateway feedback events"
grep -Eq 'recpipe_cache_misses_total\{service="gateway"\} [1-9]' "$T/gateway.prom" || fail "gateway cache misses"
grep -Eq '^recpipe_cache_evictions_total\{service="gateway"\} [0-9]+$' "$T/gateway.prom" || fail "gateway cache evictions"
grep -Eq '^recpipe_cache_refreshes_deferred_total\{service="gateway"\} [0-9]+$' "$T/gateway.prom" || fail "gateway cache refreshes deferred"
grep -Eq '^recpipe_cache_entries\{service="gateway"\} [1-9][0-9]*$' "$T/gateway.prom" || fail "gateway cache entries"
grep -Eq '^recpipe_cache_bytes\{service="gateway"\} [1-9][0-9]*$' "$T/gateway.prom" || fail "gateway cache bytes"
grep -Eq '^recpipe_state_users\{service="gateway"\} [1-9][0-9]*$' "$T/gateway.prom" || fail "gateway state users"
grep -Eq '^recpipe_state_events\{service="gateway"\} [1-9][0-9]*$' "$T/gateway.prom" || fail "gateway state events"
grep -Eq 'recpipe_rpc_calls_total\{service="gateway",method="/recpipe.v1.Recommender/Recommend",code="OK"\} [1-9]' "$T/gateway.prom" || fail "gateway Recommend counter"
grep -Eq '"user":"[0-9a-f]{16}"' "$T/gateway.log" || fail "no pseudonymized user in the gateway's debug log"
grep -q '"user_id"' "$T/gateway.log" && fail "a raw user_id in the gateway log"

# TLS and mutual TLS from the command line: certificates made here with openssl.
(cd "$T" && exec > openssl.log 2>&1 &&
 openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca &&
 openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost &&
 printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > srv.ext &&
 openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile srv.ext &&
 openssl req -newkey rsa:2048 -nodes -keyout cli.key -out cli.csr -subj /CN=client &&
 openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cli.pem -days 2) || fail "openssl"
"$B" ranking --listen 127.0.0.1:0 --port-file "$T/tls.port" --tls-cert "$T/srv.pem" --tls-key "$T/srv.key" \
    --tls-client-ca "$T/ca.pem" > "$T/tls.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$T/tls.port" ] && break; sleep 0.05; done
tp=$(cat "$T/tls.port")
grep -q '"tls":"mutual"' "$T/tls.log" || fail "the listener does not report mutual TLS"
"$B" status --target "127.0.0.1:$tp" --tls-ca "$T/ca.pem" --tls-client-cert "$T/cli.pem" \
    --tls-client-key "$T/cli.key" --timeout 5s > "$T/tls1.out" 2>&1 || fail "mTLS status: $(cat "$T/tls1.out")"
if "$B" status --target "127.0.0.1:$tp" --tls-ca "$T/ca.pem" --timeout 3s > "$T/tls2.out" 2>&1; then
    fail "a client without a certificate was served under mutual TLS"; fi
if "$B" status --target "127.0.0.1:$tp" --timeout 3s > "$T/tls3.out" 2>&1; then
    fail "a plaintext client was served by a TLS listener"; fi

# The gateway calls a retrieval shard over mutual TLS (client flags), and its answers
# are not degraded to RETRIEVAL_FAILED.
"$B" retrieval --bundle "$T/bundle" --listen 127.0.0.1:0 --port-file "$T/tlsr.port" --threads 2 \
    --tls-cert "$T/srv.pem" --tls-key "$T/srv.key" --tls-client-ca "$T/ca.pem" > "$T/tlsr.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$T/tlsr.port" ] && break; sleep 0.05; done
"$B" gateway --bundle "$T/bundle" --state "$T/state2" --listen 127.0.0.1:0 --threads 2 \
    --retrieval "127.0.0.1:$(cat "$T/tlsr.port")" --metrics-listen 127.0.0.1:0 --tls-ca "$T/ca.pem" \
    --tls-client-cert "$T/cli.pem" --tls-client-key "$T/cli.key" > "$T/tlsgw.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do grep -q 'is now SERVING' "$T/tlsgw.log" && break; sleep 0.05; done
gp=$(grep -o '"port":[0-9]*' "$T/tlsgw.log" | head -1 | cut -d: -f2)
"$B" loadtest --target "127.0.0.1:$gp" --rate 50 --duration 1s --warmup 0 --users 300 --items 120 \
    > "$T/loadtest2.log" 2>&1 || fail "loadtest against the TLS gateway"
curl -sf -m 5 "http://127.0.0.1:$(mport tlsgw)/metrics" > "$T/tlsgw.prom" || fail "TLS gateway scrape"
grep -Eq 'recpipe_gateway_stage_duration_seconds_count\{stage="retrieval"\} [1-9]' "$T/tlsgw.prom" || fail "no retrieval over TLS"
grep -q 'reason="retrieval_failed"' "$T/tlsgw.prom" && fail "gateway → retrieval over mTLS failed"
grep -Eq 'recpipe_rpc_calls_total\{service="retrieval",method="/recpipe.v1.Retrieval/Retrieve",code="OK"\}' "$T/tlsgw.prom" &&
    fail "unexpected: the retrieval series in the gateway process"

# The token from the environment (RECPIPE_ADMIN_TOKEN) instead of a file.
RECPIPE_ADMIN_TOKEN=env-token "$B" ranking --listen 127.0.0.1:0 --port-file "$T/env.port" > "$T/env.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$T/env.port" ] && break; sleep 0.05; done
if "$B" reload --targets "127.0.0.1:$(cat "$T/env.port")" > "$T/e1.out" 2>&1; then fail "RECPIPE_ADMIN_TOKEN ignored"; fi
grep -q UNAUTHENTICATED "$T/e1.out" || fail "env token: $(cat "$T/e1.out")"
printf 'env-token\n' > "$T/envtok"
"$B" reload --targets "127.0.0.1:$(cat "$T/env.port")" --token-file "$T/envtok" > "$T/e2.out" 2>&1 &&
    fail "reload of a service without a bundle succeeded"
# Past the token check, a ranking without a bundle does not serve Reload.
grep -q UNIMPLEMENTED "$T/e2.out" || fail "env token: $(cat "$T/e2.out")"
grep -q 'PERMISSION_DENIED\|UNAUTHENTICATED' "$T/e2.out" && fail "the env token was refused"

# Unknown paths answer 404.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(mport retrieval)/nope")
[ "$code" = 404 ] || fail "GET /nope answered $code"
# Refused admin calls are logged without the token.
grep -q 's3cret-token\|wrong-token' "$T"/*.log && fail "a token appears in the logs"
echo "ok: metrics of retrieval, ranking and gateway pass promtool; counters, bundle info, admin token, pseudonyms, TLS/mTLS from the CLI and gateway → retrieval over mTLS checked"
