#!/bin/sh
# bench/index/run.sh BUILD_DIR — 1M synthetic 64-d clustered vectors, IVF-Flat, inner
# product: build time, index size on disk and in memory, single-query latency and batch
# throughput at the recall@100 tuned to 0.95, recpipe's wrapper against FAISS called
# directly with the same parameters in the same run. Writes bench/results/index.json.
# Takes a few minutes on 2 cores; OPENBLAS_CORETYPE is left as the machine sets it.
set -e
BUILD=${1:-build}
B="$BUILD/bench/bench_index"
[ -x "$B" ] || cmake --build "$BUILD" --target bench_index >/dev/null
mkdir -p bench/results
"$B" --n "${RP_BENCH_INDEX_N:-1000000}" --dim 64 --queries 1000 --target 0.95 \
  --out bench/results/index.json
