#!/usr/bin/env bash
# Builds recpipe's libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined)
# into build-fuzz/ and runs each for a bounded time on its seed corpus.
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET...]
# Findings (crash-*, leak-*, timeout-* files) are written to build-fuzz/findings/; the
# script exits 1 when any target found something. The corpus a run grows stays in
# build-fuzz/corpus/ (the committed seeds in tests/fuzz/corpus/ are only read).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_retrieve fuzz_rank fuzz_gateway fuzz_csv fuzz_manifest fuzz_model)
B="${RECPIPE_FUZZ_BUILD:-build-fuzz}"

if [ ! -f "$B/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRECPIPE_FUZZ=ON \
    -DRECPIPE_SANITIZE=address,undefined \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" \
    >/dev/null 2>&1
fi
if ! cmake --build "$B" -j"${RECPIPE_FUZZ_JOBS:-2}" --target "${targets[@]}" >"$B/build.log" 2>&1; then
  grep -E 'error' "$B/build.log" | head -20
  echo "fuzz: build failed (log: $B/build.log)"
  exit 2
fi

mkdir -p "$B/findings"
status=0
# FAISS/OpenBLAS run one thread inside a target; LMDB and the gRPC core keep globals that
# LeakSanitizer would count at exit, hence detect_leaks only in the per-input sense.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/$t"
  work="$B/corpus/$t"
  mkdir -p "$work"
  start=$(date +%s)
  if "$B/tests/fuzz/$t" "$work" "$seeds" -max_total_time="$secs" -max_len=65536 -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$B/findings/$t-" -print_final_stats=1 \
      >"$B/findings/$t.log" 2>&1; then
    execs=$(grep -a 'stat::number_of_executed_units' "$B/findings/$t.log" | awk '{print $2}')
    echo "fuzz: $t: ok, $((  $(date +%s) - start )) s, ${execs:-?} inputs"
  else
    echo "fuzz: $t: FOUND SOMETHING (log: $B/findings/$t.log)"
    grep -a -m5 -E 'ERROR|SUMMARY|runtime error' "$B/findings/$t.log" || true
    status=1
  fi
done
exit $status
