#!/usr/bin/env bash
# Prints whether the local MariaDB answers; exit 0 when up, 3 when down.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
DIR="$STACK_VAR/mariadb"
if [[ -f "$DIR/my.cnf" ]] && mariadb --defaults-file="$DIR/my.cnf" -uroot -N -e 'SELECT 1' >/dev/null 2>&1; then
  gtid=$(mariadb --defaults-file="$DIR/my.cnf" -uroot -N -e 'SELECT @@gtid_binlog_pos')
  echo "mariadb  up    127.0.0.1:$PAYSTREAM_MYSQL_PORT  gtid_binlog_pos=${gtid:-<empty>}  log=$DIR/mariadb.log"
else
  echo "mariadb  down  127.0.0.1:$PAYSTREAM_MYSQL_PORT"
  exit 3
fi
