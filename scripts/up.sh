#!/usr/bin/env bash
# The last step of `make up`: starts paystream's workloads on top of the
# running stack and shows a change travelling through the pipeline.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/workloads.sh"

PREFIX="${PAYSTREAM_TOPIC_PREFIX:-paystream}"
export PAYSTREAM_LOG="${PAYSTREAM_LOG:-info}"

start_workload producer 19190 paystream-producer \
  --mysql-port "$PAYSTREAM_MYSQL_PORT" \
  --mysql-user paystream_cdc --mysql-password "${PAYSTREAM_MYSQL_CDC_PASSWORD:-paystream-cdc}" \
  --mysql-tls verify-identity --mysql-tls-ca "$STACK_VAR/tls/ca.pem" \
  --topic-prefix "$PREFIX" --include-table 'payments.*' \
  --kafka-bootstrap "127.0.0.1:$PAYSTREAM_KAFKA_PORT"

# One consumer process with a fixed static group member id: restarted after a
# crash it takes its partitions back at once (docs/adr/0011-consumer-takeover.md).
start_workload consumer 19191 paystream-consumer \
  --topic-prefix "$PREFIX" --group-instance-id "$PREFIX-consumer-0" \
  --redis-url "redis://127.0.0.1:$PAYSTREAM_REDIS_PORT/0" --redis-password "$PAYSTREAM_REDIS_PASSWORD" \
  --kafka-bootstrap "127.0.0.1:$PAYSTREAM_KAFKA_PORT"

# The API holds many keep-alive connections: give it the descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export PAYSTREAM_JWT_SECRET="${PAYSTREAM_JWT_SECRET:-paystream-local-demo-secret-change-me-000}"
start_workload api 19192 paystream-api --listen-addr 127.0.0.1:18080 \
  --mysql-port "$PAYSTREAM_MYSQL_PORT" --mysql-user paystream_app --mysql-password "${PAYSTREAM_MYSQL_APP_PASSWORD:-paystream-app}" \
  --mysql-tls verify-identity --mysql-tls-ca "$STACK_VAR/tls/ca.pem" \
  --redis-url "redis://127.0.0.1:$PAYSTREAM_REDIS_PORT/0" --redis-password "$PAYSTREAM_REDIS_PASSWORD" \
  --topic-prefix "$PREFIX"

# Show one change travelling: update a purchase, read its change event.
MYSQL=(mariadb --defaults-file="$STACK_VAR/mariadb/my.cnf" -uroot payments)
id=$("${MYSQL[@]}" -N -e "SELECT id FROM purchases WHERE user_id = 42 ORDER BY created_at DESC, id DESC LIMIT 1")
"${MYSQL[@]}" -e "UPDATE purchases SET quantity = quantity + 1 WHERE id = $id"
version=$("${MYSQL[@]}" -N -e "SELECT version FROM purchases WHERE id = $id")
log "updated purchase $id to version $version; waiting for its change event in Kafka"
topic="$PREFIX.payments.purchases"
event=""
seen_event() {
  event=$(kcat -C -b "127.0.0.1:$PAYSTREAM_KAFKA_PORT" -t "$topic" -o -2000 -e -q \
    -X isolation.level=read_committed -f '%k\t%s\n' 2>/dev/null \
    | awk -F'\t' -v k="{\"id\":$id}" '$1 == k' | grep "\"version\":$version" | tail -n 1)
  [[ -n "$event" ]]
}
wait_until 120 "the change event" seen_event || die "no change event for purchase $id; see $RUN_DIR/producer.log"

cat <<MSG

paystream is up.
  MariaDB   127.0.0.1:$PAYSTREAM_MYSQL_PORT   (schema payments, 10,000 demo users)
  Kafka     127.0.0.1:$PAYSTREAM_KAFKA_PORT   (change topics $PREFIX.payments.*)
  Redis     127.0.0.1:$PAYSTREAM_REDIS_PORT
  producer  metrics http://127.0.0.1:19190/metrics   log $RUN_DIR/producer.log
  consumer  metrics http://127.0.0.1:19191/metrics   log $RUN_DIR/consumer.log
  api       http://127.0.0.1:18080 (OpenAPI at /openapi.json)   log $RUN_DIR/api.log

The change event of purchase $id (version $version), as any Kafka client sees it:
$(printf '%s\n' "$event" | cut -f2 | cut -c1-400)

User 42's purchase packages, newest first, served from the Redis read model:

  curl -s -H "Authorization: Bearer \$(bash scripts/demo-token.sh 42)" http://127.0.0.1:18080/v1/users/42/purchases?limit=3

$(curl -s -H "Authorization: Bearer $(bash "$(dirname "${BASH_SOURCE[0]}")/demo-token.sh" 42)" "http://127.0.0.1:18080/v1/users/42/purchases?limit=3" | cut -c1-600)

The raw change stream, as any Kafka client sees it:

  kcat -C -b 127.0.0.1:$PAYSTREAM_KAFKA_PORT -t $topic -o beginning -e -X isolation.level=read_committed -f '%k %s\\n' | grep '"user_id":42,' | tail -n 3

Stop everything with 'make down'.
MSG
