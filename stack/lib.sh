#!/usr/bin/env bash
# Shared helpers for the local stack scripts: paths, ports, logging and
# condition polling. Sourced by stack/*/ scripts; never run directly.

STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PAYSTREAM_VAR="${PAYSTREAM_VAR:-$STACK_ROOT/var}"
export PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-$HOME/.cache/paystream}"
STACK_VAR="$PAYSTREAM_VAR/stack"

# Ports (loopback only). Defaults are off the usual ports so a developer's own
# servers keep running beside the stack.
export PAYSTREAM_MYSQL_PORT="${PAYSTREAM_MYSQL_PORT:-13306}"
export PAYSTREAM_KAFKA_PORT="${PAYSTREAM_KAFKA_PORT:-19092}"
export PAYSTREAM_KAFKA_CONTROLLER_PORT="${PAYSTREAM_KAFKA_CONTROLLER_PORT:-19093}"
export PAYSTREAM_REDIS_PORT="${PAYSTREAM_REDIS_PORT:-16379}"
export PAYSTREAM_REDIS_PASSWORD="${PAYSTREAM_REDIS_PASSWORD:-paystream-redis}"

log()  { printf '[stack] %s\n' "$*" >&2; }
die()  { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# wait_until DEADLINE_SECONDS DESCRIPTION COMMAND...
# Polls COMMAND until it succeeds or the deadline passes. The short pause between
# probes is a poll interval, not a guess at readiness.
wait_until() {
  local deadline=$1 what=$2; shift 2
  local end=$(( $(date +%s) + deadline ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= end )); then
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive PIDFILE: true when the pid in PIDFILE is a running process.
pid_alive() {
  [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pidfile NAME PIDFILE [TIMEOUT]: SIGTERM, wait for exit, then SIGKILL.
stop_pidfile() {
  local name=$1 pidfile=$2 timeout=${3:-30}
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  local pid; pid=$(cat "$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$timeout" "$name to exit" bash -c "! kill -0 $pid"; then
    log "$name did not exit after ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 10 "$name to die" bash -c "! kill -0 $pid" || die "$name (pid $pid) survived SIGKILL"
  fi
  rm -f "$pidfile"
}

# apt_install PKG...: installs missing Debian packages (runs apt-get update once).
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  (( ${#missing[@]} == 0 )) && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  # Another apt run (a parallel make target, unattended upgrades) holds the
  # lock for a while: wait for it instead of failing.
  local wait=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
