#!/usr/bin/env bash
# Starts the local MariaDB 10.11 configured for change data capture: ROW binlog
# with full images and full row metadata, GTID, a fixed server id, TLS with the
# local CA. Creates the least-privilege users and applies the migrations.
# Idempotent: a running server is left alone (users and migrations are still
# brought up to date).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

DIR="$STACK_VAR/mariadb"
CNF="$DIR/my.cnf"
SOCK="$DIR/mysqld.sock"
PIDFILE="$DIR/mysqld.pid"
LOG="$DIR/mariadb.log"

apt_install mariadb-server mariadb-client
bash "$STACK_ROOT/stack/tls.sh"
mkdir -p "$DIR/data" "$DIR/binlog" "$DIR/tmp"

run_user=$(id -un)
cat > "$CNF" <<CNF
[client]
socket = $SOCK

[mysqld]
user                     = $run_user
datadir                  = $DIR/data
socket                   = $SOCK
pid-file                 = $PIDFILE
log-error                = $LOG
tmpdir                   = $DIR/tmp
bind-address             = 127.0.0.1
port                     = $PAYSTREAM_MYSQL_PORT
skip-name-resolve
character-set-server     = utf8mb4
collation-server         = utf8mb4_unicode_ci
max_connections          = 1000
innodb_buffer_pool_size  = 256M
innodb_log_file_size     = 128M
innodb_flush_log_at_trx_commit = 1
sync_binlog              = 1

# Change data capture
server_id                = 1
log_bin                  = $DIR/binlog/mariadb-bin
log_bin_index            = $DIR/binlog/mariadb-bin.index
binlog_format            = ROW
binlog_row_image         = FULL
binlog_row_metadata      = FULL
binlog_checksum          = CRC32
binlog_expire_logs_seconds = 604800
max_binlog_size          = 256M
gtid_domain_id           = 0
gtid_strict_mode         = ON
log_slave_updates        = ON

# TLS with the locally generated CA
ssl_ca                   = $STACK_VAR/tls/ca.pem
ssl_cert                 = $STACK_VAR/tls/server-cert.pem
ssl_key                  = $STACK_VAR/tls/server-key.pem
CNF

sql() { mariadb --defaults-file="$CNF" -uroot --protocol=socket "$@"; }

if pid_alive "$PIDFILE" && mariadb-admin --defaults-file="$CNF" -uroot ping >/dev/null 2>&1; then
  log "MariaDB already running on 127.0.0.1:$PAYSTREAM_MYSQL_PORT"
else
  if [[ ! -d "$DIR/data/mysql" ]]; then
    log "initialising MariaDB data directory in $DIR/data"
    mariadb-install-db --defaults-file="$CNF" --auth-root-authentication-method=socket \
      --auth-root-socket-user="$run_user" --skip-test-db >"$DIR/install-db.log" 2>&1 \
      || die "mariadb-install-db failed; see $DIR/install-db.log"
  fi
  log "starting MariaDB on 127.0.0.1:$PAYSTREAM_MYSQL_PORT (log: $LOG)"
  setsid nohup mariadbd --defaults-file="$CNF" >>"$LOG" 2>&1 < /dev/null &
  if ! wait_until 60 "MariaDB" sql -e 'SELECT 1'; then
    tail -n 20 "$LOG" >&2 || true
    die "MariaDB did not become ready within 60s; its log is $LOG"
  fi
fi

# Users: least privilege for each role. Idempotent.
sql <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS payments CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE DATABASE IF NOT EXISTS paystream_meta;
CREATE TABLE IF NOT EXISTS paystream_meta.schema_migrations (
  version VARCHAR(255) NOT NULL PRIMARY KEY,
  applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);

CREATE USER IF NOT EXISTS 'paystream_app'@'%' IDENTIFIED BY '${PAYSTREAM_MYSQL_APP_PASSWORD:-paystream-app}';
GRANT SELECT, INSERT, UPDATE, DELETE ON payments.* TO 'paystream_app'@'%';

-- CDC: read the binlog (REPLICATION SLAVE), ask for positions (BINLOG MONITOR,
-- formerly REPLICATION CLIENT) and read rows for the snapshot (SELECT).
CREATE USER IF NOT EXISTS 'paystream_cdc'@'%' IDENTIFIED BY '${PAYSTREAM_MYSQL_CDC_PASSWORD:-paystream-cdc}';
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'paystream_cdc'@'%';
GRANT SELECT ON payments.* TO 'paystream_cdc'@'%';

-- Tests and operators: schema changes and binlog maintenance.
CREATE USER IF NOT EXISTS 'paystream_admin'@'%' IDENTIFIED BY '${PAYSTREAM_MYSQL_ADMIN_PASSWORD:-paystream-admin}';
GRANT ALL PRIVILEGES ON *.* TO 'paystream_admin'@'%' WITH GRANT OPTION;
SQL

# Migrations, in file-name order, each recorded once.
for f in "$STACK_ROOT"/stack/mariadb/migrations/*.sql; do
  v=$(basename "$f" .sql)
  done_already=$(sql -N -e "SELECT COUNT(*) FROM paystream_meta.schema_migrations WHERE version='$v'")
  if [[ "$done_already" == "0" ]]; then
    log "applying migration $v"
    { echo "USE payments;"; cat "$f"; echo "INSERT INTO paystream_meta.schema_migrations (version) VALUES ('$v');"; } | sql \
      || die "migration $v failed"
  fi
done
log "MariaDB ready: mysql://paystream_app@127.0.0.1:$PAYSTREAM_MYSQL_PORT/payments"
