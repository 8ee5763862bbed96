#!/bin/sh
# bench/als/run.sh BUILD_DIR — iALS training time on ml-latest-small (610 users, 9,724
# rated items, 100,836 interactions), 64 factors, 10 sweeps, all cores; best and median
# of 5 runs (a numpy reference takes about 9 s on this machine; the goal is under 1 s),
# and the fold-in cost per request (one thread, histories of 5/20/50/200 items).
# Runs once with OPENBLAS_CORETYPE as the machine sets it (bench/results/als.json) and
# once with it unset for this command only, so OpenBLAS auto-detects the core
# (bench/results/als-autodetect.json). The trainer spends almost all its time in its own
# vectorized row solves, so the two should agree.
set -e
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B="$BUILD/bench/bench_als"
[ -x "$B" ] || cmake --build "$BUILD" --target bench_als >/dev/null
DATA="$SRC/../shared/data/ml-latest-small/ratings.csv"
[ -f "$DATA" ] || DATA="$SRC/data/ml-latest-small/ratings.csv"
mkdir -p "$SRC/bench/results"
echo "== iALS training, ml-latest-small, 64 factors, 10 sweeps (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, $(nproc) cores)"
"$B" "$DATA" 64 10 5 "$SRC/bench/results/als.json" | tail -2
echo "== the same with OPENBLAS_CORETYPE unset for this command (auto-detected core)"
env -u OPENBLAS_CORETYPE "$B" "$DATA" 64 10 5 "$SRC/bench/results/als-autodetect.json" | tail -2
