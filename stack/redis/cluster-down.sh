#!/usr/bin/env bash
# Stops the local Redis Cluster started by cluster-up.sh; no node is left.
# `--locked` is for cluster-up.sh, which already holds the lock.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

BASE="${PAYSTREAM_REDIS_CLUSTER_PORT:-17001}"
COUNT="${PAYSTREAM_REDIS_CLUSTER_NODES:-3}"
DIR="$STACK_VAR/redis-cluster"
[[ -d $DIR ]] || exit 0
if [[ ${1:-} != --locked ]]; then
  exec 9>"$DIR/.lock"
  flock 9
fi
for pidfile in "$DIR"/*/redis.pid; do
  [[ -e $pidfile ]] || continue
  stop_pidfile "Redis Cluster node $(basename "$(dirname "$pidfile")")" "$pidfile" 30
done
# A node whose pid file is gone (crash, wiped directory): find it by its port.
for port in $(seq "$BASE" $(( BASE + COUNT - 1 ))); do
  for pid in $(pgrep -f "redis-server 127.0.0.1:$port \[cluster\]" || true); do
    log "stopping Redis Cluster node $port (pid $pid) without a pid file"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 30 "node $port to exit" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
  done
done
