#!/usr/bin/env bash
# Prints whether the local Redis Cluster is healthy; exit 0 when up, 3 when down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
BASE="${PAYSTREAM_REDIS_CLUSTER_PORT:-17001}"
COUNT="${PAYSTREAM_REDIS_CLUSTER_NODES:-3}"
if REDISCLI_AUTH="$PAYSTREAM_REDIS_PASSWORD" redis-cli --no-auth-warning -h 127.0.0.1 -p "$BASE" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
  echo "redis-cluster up    127.0.0.1:$BASE..$(( BASE + COUNT - 1 ))  logs=$STACK_VAR/redis-cluster/"
else
  echo "redis-cluster down  127.0.0.1:$BASE..$(( BASE + COUNT - 1 ))"
  exit 3
fi
