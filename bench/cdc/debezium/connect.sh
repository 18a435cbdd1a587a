#!/usr/bin/env bash
# Runs Debezium in a Kafka Connect standalone worker, in the foreground, as
# `paystream-bench cdc` does:
#   bench/cdc/debezium/connect.sh RUN_DIR
# RUN_DIR holds worker.properties and connector.properties (the benchmark
# writes them); the worker logs to RUN_DIR/connect.log. The JVM replaces this
# shell (exec), so the caller's child pid is the Connect JVM and its VmHWM is
# the worker's peak RSS.
# Heap and GC flags are Kafka's stock ones for Connect (connect-standalone.sh
# and kafka-run-class.sh): -Xms256M -Xmx2G, G1 with a 20 ms pause goal.
# DEBEZIUM_HEAP_OPTS overrides the heap.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../../stack/lib.sh"
source "$here/../../../stack/kafka/common.sh"
source "$here/common.sh"

(( $# == 1 )) || die "usage: $0 RUN_DIR (with worker.properties and connector.properties)"
run_dir=$(cd "$1" && pwd)
[[ -f $run_dir/worker.properties && -f $run_dir/connector.properties ]] \
  || die "$run_dir needs worker.properties and connector.properties"

bash "$here/install.sh"
java_bin=$(kafka_java) || die "no Java >= 17"

# shellcheck disable=SC2086  # heap options are a list of words
exec "$java_bin" ${DEBEZIUM_HEAP_OPTS:--Xms256M -Xmx2G} \
  -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$here/log4j2.properties" -Dconnect.log.file="$run_dir/connect.log" \
  -cp "$DBZ_LIBS/*" org.apache.kafka.connect.cli.ConnectStandalone \
  "$run_dir/worker.properties" "$run_dir/connector.properties"
