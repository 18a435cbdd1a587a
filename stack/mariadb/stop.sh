#!/usr/bin/env bash
# Stops the local MariaDB cleanly (SIGTERM lets InnoDB flush), then makes sure
# no mariadbd of this stack is left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
DIR="$STACK_VAR/mariadb"
stop_pidfile MariaDB "$DIR/mysqld.pid" 60
if pgrep -f "mariadbd --defaults-file=$DIR/my.cnf" >/dev/null; then
  pkill -KILL -f "mariadbd --defaults-file=$DIR/my.cnf" || true
fi
