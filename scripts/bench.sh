#!/bin/sh
# scripts/bench.sh [BUILD_DIR] — runs every benchmark section (bench/*/run.sh, in name
# order; RECPIPE_BENCH="rpc index" runs only those) and prints the machine they ran on.
# Each section writes its JSON into bench/results/; this script adds
# bench/results/machine.json. Benchmarks are figures, not tests: they never fail the
# build, but a section that exits non-zero is reported at the end.
set -u
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$SRC/$BUILD" ;; esac
RES="$SRC/bench/results"
mkdir -p "$RES"

CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
echo "machine: $(nproc) cores, CPU: ${CPU:-unknown}, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '{"cores":%s,"cpu":"%s","openblas_coretype":"%s","kernel":"%s","date":"%s"}\n' \
  "$(nproc)" "$CPU" "${OPENBLAS_CORETYPE:-}" "$(uname -r)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  >"$RES/machine.json"

failed=""
for run in "$SRC"/bench/*/run.sh; do
  [ -f "$run" ] || continue
  section=$(basename "$(dirname "$run")")
  if [ -n "${RECPIPE_BENCH:-}" ]; then
    case " $RECPIPE_BENCH " in *" $section "*) ;; *) continue ;; esac
  fi
  echo
  echo "######## $section"
  if ! sh "$run" "$BUILD"; then
    echo "bench: section $section failed"
    failed="$failed $section"
  fi
done
echo
if [ -n "$failed" ]; then
  echo "bench: sections that failed:$failed"
  exit 1
fi
echo "bench: results in bench/results/"
