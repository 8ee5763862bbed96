#!/bin/sh
# bench/ranking/run.sh BUILD_DIR — one Rank request of 500 candidates x 50 history events
# on one thread (default model: d 32, attention 64-32-1, 3 cross layers, deep 256-128):
# p50/p99 latency (wall and thread CPU), FLOPs per candidate, achieved GFLOP/s, and
# cblas_sgemm on the model's own matrix shapes measured in the same run. The goal: p50 at
# most half of PyTorch's 7-8 ms for this architecture here, and at least 60% of the sgemm
# rate for the FLOPs performed.
# Runs once with OPENBLAS_CORETYPE as the machine sets it (bench/results/ranking.json)
# and once with it unset for this command only, so OpenBLAS auto-detects the core
# (bench/results/ranking-autodetect.json).
set -e
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$BUILD/bench/bench_rank"
[ -x "$B" ] || cmake --build "$BUILD" --target bench_rank >/dev/null
mkdir -p "$SRC/bench/results"
"$B" --candidates 500 --history 50 --requests 300 --json "$SRC/bench/results/ranking.json"
echo "== the same with OPENBLAS_CORETYPE unset for this command (auto-detected core)"
env -u OPENBLAS_CORETYPE "$B" --candidates 500 --history 50 --requests 300 \
  --json "$SRC/bench/results/ranking-autodetect.json"
