#!/usr/bin/env bash
# Runs a Kafka command-line tool from the installed jars.
#   stack/kafka/tool.sh topics --create --if-not-exists --topic payments --partitions 3
#   stack/kafka/tool.sh topics --list
#   stack/kafka/tool.sh transactions list
#   stack/kafka/tool.sh org.apache.kafka.tools.GetOffsetShell --topic payments
# The first argument is an alias below or a fully qualified main class. Tools that
# take --bootstrap-server get ours unless the arguments name one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

(( $# >= 1 )) || die "usage: $0 TOOL [ARGS...]; TOOL: topics, transactions, groups, configs, console-producer, console-consumer, metadata-quorum, features, storage, or a main class"
tool=$1; shift
bootstrap=1
case $tool in
  topics)            main=org.apache.kafka.tools.TopicCommand ;;
  transactions)      main=org.apache.kafka.tools.TransactionsCommand ;;
  groups|consumer-groups) main=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  configs)           main=org.apache.kafka.tools.ConfigCommand ;;
  console-producer)  main=org.apache.kafka.tools.ConsoleProducer ;;
  console-consumer)  main=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  metadata-quorum)   main=org.apache.kafka.tools.MetadataQuorumCommand ;;
  features)          main=org.apache.kafka.tools.FeatureCommand ;;
  get-offsets)       main=org.apache.kafka.tools.GetOffsetShell ;;
  storage)           main=kafka.tools.StorageTool; bootstrap=0 ;;
  *.*)               main=$tool ;;
  *)                 die "unknown tool '$tool'" ;;
esac

kafka_libs_ready || bash "$KAFKA_DIR/install.sh"
java_bin=$(kafka_java) || die "no Java >= 17 (run stack/kafka/install.sh)"

args=("$@")
if (( bootstrap )) && [[ " $* " != *" --bootstrap-server "* && " $* " != *" --bootstrap-server="* ]]; then
  args=(--bootstrap-server "$KAFKA_BOOTSTRAP" "$@")
fi

# Short-lived client JVM: small heap, quick start.
exec "$java_bin" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
  -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
  -cp "$KAFKA_LIBS/*" "$main" "${args[@]}"
