#!/usr/bin/env bash
# Stops the local Kafka gracefully (SIGTERM: controlled shutdown, logs flushed),
# then checks that no java process with our server.properties is left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
kafka_drop_stale_pidfile

stopped=0
if pid_alive "$KAFKA_PIDFILE"; then
  stop_pidfile kafka "$KAFKA_PIDFILE" "$KAFKA_STOP_TIMEOUT"
  stopped=1
fi
rm -f "$KAFKA_PIDFILE"

# A server whose pid file was lost (or overwritten) still runs with our config.
for pid in $(kafka_server_pids); do
  log "found Kafka pid $pid running with $KAFKA_CONF without a pid file"
  stray_pidfile="$KAFKA_VAR/kafka.stray.pid"
  echo "$pid" >"$stray_pidfile"
  stop_pidfile kafka "$stray_pidfile" "$KAFKA_STOP_TIMEOUT"
  stopped=1
done

left=$(kafka_server_pids | tr '\n' ' ')
[[ -z ${left// /} ]] || die "Kafka processes still running with $KAFKA_CONF: $left"

if (( stopped )); then
  log "kafka stopped"
else
  log "kafka was not running"
fi
