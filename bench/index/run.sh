#!/bin/sh
# bench/index/run.sh [BUILD_DIR] — 1M synthetic 64-d clustered unit vectors, IVF-Flat,
# inner product: build time, index size on disk and in memory, single-query latency and
# batch throughput at the nprobe tuned to recall@100 0.95, recpipe's wrapper against FAISS
# called directly with the same parameters in the same run; then a whole bundle build and
# open. Writes bench/results/index.json. About 6 minutes on an idle 2-core machine (longer
# under load); RP_BENCH_INDEX_N=100000 for a quick run. OPENBLAS_CORETYPE is left as set.
set -e
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD="$SRC/$BUILD" ;; esac
B="$BUILD/bench/bench_index"
[ -x "$B" ] || cmake --build "$BUILD" --target bench_index >/dev/null
mkdir -p "$SRC/bench/results"
"$B" --n "${RP_BENCH_INDEX_N:-1000000}" --dim 64 --queries 1000 --target 0.95 \
  --out "$SRC/bench/results/index.json"
