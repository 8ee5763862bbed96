# bench/lib.sh — sourced by bench/<section>/run.sh after `set -eu`: what every bench
# script needs before it measures anything.
#
#   bench_init NAME BUILD_DIR   SRC, BUILD, BIN (recpipe, built if missing), OUT
#                               (bench/results), TMP (removed on exit), PY (Debian's
#                               python3), D (ml-latest-small); on exit, runs the
#                               script's bench_on_exit if it defines one, then stops
#                               every process given to bench_track
#   bench_track PID...          stopped (SIGTERM, then waited for) on exit
#   bench_fail MSG...           prints "bench/NAME: MSG" and exits 1
#   free_port                   a free TCP port on 127.0.0.1
#   bench_import [ARGS...]      `recpipe import` of ml-latest-small into $TMP/ml (ARGS
#                               go to import, e.g. --tags "$D/tags.csv")
#   bench_wait_up NAME ADDR PID waits until the service at ADDR answers Admin.Status;
#                               fails with the tail of $TMP/NAME.log if PID dies first
#   bench_serve BUNDLE [FLAGS]  `recpipe serve` on BUNDLE (state in $TMP/state), waits
#                               for "ready": SPID, GP (the gateway's port), GPID, RPID
#                               and KPID (a retrieval and a ranking child), RADDR and
#                               KADDR (their addresses, comma-separated), TARGETS (every
#                               service, for `recpipe reload --targets`)

bench_init() {
  BENCH_NAME=$1
  BUILD=$(cd "${2:-build}" && pwd)
  SRC=$(cd "$(dirname "$0")/../.." && pwd)
  BIN="$BUILD/recpipe"
  [ -x "$BIN" ] || cmake --build "$BUILD" --target recpipe >/dev/null
  OUT="$SRC/bench/results"
  mkdir -p "$OUT"
  PY=/usr/bin/python3
  D=$SRC/data/ml-latest-small
  [ -f "$D/ratings.csv" ] || D=/work/shared/data/ml-latest-small
  BENCH_PIDS=""
  TMP=$(mktemp -d)
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  if type bench_on_exit >/dev/null 2>&1; then bench_on_exit || true; fi
  for p in $BENCH_PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $BENCH_PIDS; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}

bench_track() {
  BENCH_PIDS="$BENCH_PIDS $*"
}

bench_fail() {
  echo "bench/$BENCH_NAME: $*" >&2
  exit 1
}

free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_import() {
  "$BIN" import --ratings "$D/ratings.csv" --items "$D/movies.csv" "$@" --out "$TMP/ml" >/dev/null
}

bench_wait_up() {
  _i=0
  until "$BIN" status --target "$2" >/dev/null 2>&1; do
    _i=$((_i + 1))
    if [ $_i -gt 300 ] || ! kill -0 "$3" 2>/dev/null; then
      tail -n 20 "$TMP/$1.log" 2>/dev/null || true
      bench_fail "$1 did not start"
    fi
    sleep 0.2
  done
}

bench_serve() {
  _bundle=$1
  shift
  GP=$(free_port)
  "$BIN" serve --bundle "$_bundle" --state "$TMP/state" --listen "127.0.0.1:$GP" "$@" \
    >"$TMP/serve.out" 2>"$TMP/serve.log" &
  SPID=$!
  bench_track "$SPID"
  _i=0
  until grep -q "ready" "$TMP/serve.out" 2>/dev/null; do
    _i=$((_i + 1))
    if [ $_i -gt 600 ] || ! kill -0 "$SPID" 2>/dev/null; then
      tail -n 20 "$TMP/serve.log"
      bench_fail "recpipe serve did not become ready"
    fi
    sleep 0.2
  done
  # The children's pids and addresses, from their command lines.
  GPID=""; RPID=""; KPID=""; RADDR=""; KADDR=""
  for _p in $(ps --ppid "$SPID" -o pid=); do
    _args=$(tr '\0' ' ' <"/proc/$_p/cmdline")
    _addr=$(echo "$_args" | sed -n 's/.*--listen \([^ ]*\).*/\1/p')
    case "$_args" in
      *" gateway "*) GPID=$_p ;;
      *" retrieval "*) RPID=$_p; RADDR="$RADDR${RADDR:+,}$_addr" ;;
      *" ranking "*) KPID=$_p; KADDR="$KADDR${KADDR:+,}$_addr" ;;
    esac
  done
  [ -n "$GPID" ] && [ -n "$RPID" ] || bench_fail "cannot find the gateway and retrieval processes"
  TARGETS="127.0.0.1:$GP${RADDR:+,$RADDR}${KADDR:+,$KADDR}"
}
