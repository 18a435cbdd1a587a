#!/usr/bin/env bash
# Prints whether the local Kafka is up. Exit 0 when up (our process answers a
# metadata request on its port), 3 when down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
kafka_drop_stale_pidfile

pid=""
if pid_alive "$KAFKA_PIDFILE"; then
  pid=$(cat "$KAFKA_PIDFILE")
else
  pid=$(kafka_server_pids); pid=${pid%%$'\n'*}   # running without a pid file
fi
if [[ -n $pid ]]; then
  if kafka_probe; then
    echo "kafka: up on $KAFKA_BOOTSTRAP (pid $pid, Kafka $KAFKA_VERSION)"
    exit 0
  fi
  if ! command -v kcat >/dev/null 2>&1; then
    echo "kafka: down? pid $pid runs but kcat is missing, so $KAFKA_BOOTSTRAP cannot be probed (run stack/kafka/install.sh)"
  else
    echo "kafka: down on $KAFKA_BOOTSTRAP (pid $pid runs but does not answer; log: $KAFKA_LOG)"
  fi
  exit 3
fi
echo "kafka: down on $KAFKA_BOOTSTRAP"
exit 3
