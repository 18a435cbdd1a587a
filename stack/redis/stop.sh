#!/usr/bin/env bash
# Stops the local Redis and makes sure no redis-server of this stack is left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
DIR="$STACK_VAR/redis"
stop_pidfile Redis "$DIR/redis.pid" 30
if pgrep -f "redis-server 127.0.0.1:$PAYSTREAM_REDIS_PORT" >/dev/null; then
  pkill -KILL -f "redis-server 127.0.0.1:$PAYSTREAM_REDIS_PORT" || true
fi
