#!/usr/bin/env bash
# The last step of `make up`: starts the workloads that exist on top of the
# running stack and prints how to see the pipeline working.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"

cat <<MSG

paystream: the local stack is up and seeded.
  MariaDB  127.0.0.1:$PAYSTREAM_MYSQL_PORT   (schema payments; logs under var/stack/mariadb)
  Kafka    127.0.0.1:$PAYSTREAM_KAFKA_PORT   (KRaft, single node; logs under var/stack/kafka)
  Redis    127.0.0.1:$PAYSTREAM_REDIS_PORT   (password set; logs under var/stack/redis)

The workloads (producer, consumer, API) are not built yet; until they are,
'make up' starts the stack and seeds it. Read one user's purchases straight
from the database:

  mariadb --defaults-file=$STACK_VAR/mariadb/my.cnf -uroot payments -e 'SELECT id, package_id, amount, currency, status, created_at FROM purchases WHERE user_id = 42 ORDER BY created_at DESC, id DESC'

Stop everything with 'make down'.
MSG
