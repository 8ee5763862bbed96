#!/bin/sh
# bench/ranking/run.sh BUILD_DIR — Rank latency (500 candidates x 50 history events, one
# thread) against cblas_sgemm in the same run. Runs twice: with this machine's
# OPENBLAS_CORETYPE as set, and once with it unset (OpenBLAS auto-detects the CPU's
# kernel) — the second line is labelled "(auto)".
set -e
BUILD=${1:-build}
B="$BUILD/bench/bench_rank"
[ -x "$B" ] || cmake --build "$BUILD" --target bench_rank >/dev/null
"$B" --candidates 500 --history 50 --requests 300
if [ -n "$OPENBLAS_CORETYPE" ]; then
  env -u OPENBLAS_CORETYPE "$B" --candidates 500 --history 50 --requests 300
fi
