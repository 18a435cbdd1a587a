#!/usr/bin/env bash
# Starts the whole local stack (MariaDB, Kafka, Redis) on loopback, installing
# whatever is missing. Idempotent: running servers are left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$STACK_ROOT/stack/mariadb/start.sh"
bash "$STACK_ROOT/stack/redis/start.sh"
bash "$STACK_ROOT/stack/kafka/start.sh"
bash "$STACK_ROOT/stack/status.sh"
