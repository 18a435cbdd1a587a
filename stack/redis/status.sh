#!/usr/bin/env bash
# Prints whether the local Redis answers PING; exit 0 when up, 3 when down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
if REDISCLI_AUTH="$PAYSTREAM_REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
  echo "redis    up    127.0.0.1:$PAYSTREAM_REDIS_PORT  log=$STACK_VAR/redis/redis.log"
else
  echo "redis    down  127.0.0.1:$PAYSTREAM_REDIS_PORT"
  exit 3
fi
