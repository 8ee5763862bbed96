#!/bin/sh
# bench/retrieval/run.sh BUILD_DIR — Retrieve over gRPC on loopback against the same
# searches in-process: 1M synthetic 64-d items (recpipe synth), IVF tuned to recall 0.95
# (recpipe index build), k=100, 2 server threads, client on the same machine. Also the
# server's CPU time per call outside FAISS. Writes bench/results/retrieval.json.
# The bundle is kept in BUILD_DIR/bench/retrieval-data between runs (about 1 GB).
set -e
BUILD=${1:-build}
R="$BUILD/recpipe"
B="$BUILD/bench/bench_retrieval"
[ -x "$R" ] || cmake --build "$BUILD" --target recpipe >/dev/null
[ -x "$B" ] || cmake --build "$BUILD" --target bench_retrieval >/dev/null
N=${RP_BENCH_RETRIEVAL_N:-1000000}
W="$BUILD/bench/retrieval-data-$N"
if [ ! -f "$W/bundle/manifest.json" ]; then
  rm -rf "$W"
  mkdir -p "$W"
  "$R" synth --items "$N" --users 1000 --dim 64 --out "$W/data" >/dev/null
  seq 1 "$N" >"$W/ids"
  "$R" index build --vectors "$W/data/item_vectors.fvecs" --ids "$W/ids" --out "$W/bundle" \
    --index IVF1024,Flat --target-recall 0.95 --version bench >/dev/null
fi
mkdir -p bench/results
"$B" --bundle "$W/bundle" --recpipe "$R" --seconds "${RP_BENCH_SECONDS:-10}" --threads 2 \
  --window "${RP_BENCH_WINDOW:-8}" --out bench/results/retrieval.json
