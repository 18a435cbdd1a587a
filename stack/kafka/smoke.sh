#!/usr/bin/env bash
# End-to-end check of the running local Kafka: creates a topic (auto-creation
# is off), produces two records in one transaction, reads them back with
# isolation.level=read_committed, and checks the transaction coordinator
# (__transaction_state) and a consumer group (__consumer_offsets).
# Usage: stack/kafka/smoke.sh   (Kafka must be started: stack/kafka/start.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

topic=paystream-smoke
run="run-$(date +%s)-$$"

kafka_probe || die "kafka does not answer on $KAFKA_BOOTSTRAP (start it with stack/kafka/start.sh)"

bash "$KAFKA_DIR/tool.sh" topics --create --if-not-exists --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null

# One transaction with both records: kcat commits at end of input.
if ! out=$(printf '%s:first\n%s:second\n' "$run" "$run" |
           kcat -P -b "$KAFKA_BOOTSTRAP" -t "$topic" -K: -m 10 -X transactional.id="paystream-smoke-$$" 2>&1); then
  printf '%s\n' "$out" >&2
  die "transactional produce to $topic failed"
fi
grep -q 'Transaction successfully committed' <<<"$out" || { printf '%s\n' "$out" >&2; die "kcat did not commit the transaction"; }

# read_committed: only records of committed transactions are returned.
got=$(kcat -C -q -b "$KAFKA_BOOTSTRAP" -t "$topic" -o beginning -e -m 10 \
        -X isolation.level=read_committed -f '%k=%s\n' | grep -c "^$run=" || true)
[[ $got -eq 2 ]] || die "expected 2 committed records with key $run in $topic, read $got"

# A consumer group commits offsets through the group coordinator.
kcat -C -q -b "$KAFKA_BOOTSTRAP" -G "paystream-smoke" "$topic" -o beginning -e -m 10 \
  -X isolation.level=read_committed >/dev/null 2>&1 || die "group consume from $topic failed"

topics=$(kcat -L -b "$KAFKA_BOOTSTRAP" -m 5)
for t in __transaction_state __consumer_offsets "$topic"; do
  grep -q "topic \"$t\"" <<<"$topics" || die "topic $t missing after the smoke test"
done
log "kafka smoke test passed on $KAFKA_BOOTSTRAP: topic created, transaction committed and read back (read_committed), group offsets stored"
