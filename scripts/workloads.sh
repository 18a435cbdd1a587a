#!/usr/bin/env bash
# Shared helpers for starting paystream's own processes locally (make up):
# where their binaries, logs and pid files are, and a readiness wait.
# Sourced; never run directly.
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"

RUN_DIR="$PAYSTREAM_VAR/run"
BIN_DIR="${CARGO_TARGET_DIR:-$PAYSTREAM_CACHE/target}/${PAYSTREAM_PROFILE:-debug}"
mkdir -p "$RUN_DIR"

# start_workload NAME OPS_PORT BINARY ARGS...: starts BINARY in the
# background unless it is already running, then waits for its /readyz.
start_workload() {
  local name=$1 ops_port=$2 bin=$3; shift 3
  local pidfile="$RUN_DIR/$name.pid" logfile="$RUN_DIR/$name.log"
  if pid_alive "$pidfile"; then
    log "$name already running (pid $(cat "$pidfile"))"
    return 0
  fi
  [[ -x "$BIN_DIR/$bin" ]] || die "$BIN_DIR/$bin is missing; run 'make build'"
  log "starting $name (log: $logfile)"
  PAYSTREAM_OPS_ADDR="127.0.0.1:$ops_port" setsid nohup "$BIN_DIR/$bin" "$@" >>"$logfile" 2>&1 < /dev/null &
  echo $! > "$pidfile"
  if ! wait_until 120 "$name ready" curl -fsS "http://127.0.0.1:$ops_port/readyz"; then
    tail -n 20 "$logfile" >&2 || true
    die "$name did not become ready within 120s; its log is $logfile"
  fi
  log "$name ready (metrics: http://127.0.0.1:$ops_port/metrics)"
}
