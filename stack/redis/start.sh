#!/usr/bin/env bash
# Starts the local Redis 7 with a password, on a plain port and a TLS port
# (certificate from the local CA). No persistence: the read model it holds is
# rebuilt from the change stream, so a restart that loses it is a case the
# pipeline must heal, not an accident. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

DIR="$STACK_VAR/redis"
CONF="$DIR/redis.conf"
PIDFILE="$DIR/redis.pid"
LOG="$DIR/redis.log"
TLS_PORT="${PAYSTREAM_REDIS_TLS_PORT:-16380}"

apt_install redis-server redis-tools
bash "$STACK_ROOT/stack/tls.sh"
mkdir -p "$DIR"
cat > "$CONF" <<CONF
bind 127.0.0.1
port $PAYSTREAM_REDIS_PORT
tls-port $TLS_PORT
tls-cert-file $STACK_VAR/tls/server-cert.pem
tls-key-file $STACK_VAR/tls/server-key.pem
tls-ca-cert-file $STACK_VAR/tls/ca.pem
tls-auth-clients no
requirepass $PAYSTREAM_REDIS_PASSWORD
daemonize no
pidfile $PIDFILE
logfile $LOG
dir $DIR
save ""
appendonly no
maxclients 20000
maxmemory-policy noeviction
CONF

ping() { REDISCLI_AUTH="$PAYSTREAM_REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" ping | grep -q PONG; }

if pid_alive "$PIDFILE" && ping; then
  log "Redis already running on 127.0.0.1:$PAYSTREAM_REDIS_PORT"
  exit 0
fi
log "starting Redis on 127.0.0.1:$PAYSTREAM_REDIS_PORT, TLS on $TLS_PORT (log: $LOG)"
# Redis refuses more clients than the descriptor limit allows; raise it for the
# high-concurrency API tests and benchmarks.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
setsid nohup redis-server "$CONF" >>"$LOG" 2>&1 < /dev/null &
if ! wait_until 30 "Redis" ping; then
  tail -n 20 "$LOG" >&2 || true
  die "Redis did not answer PING within 30s; its log is $LOG"
fi
log "Redis ready: redis://:<password>@127.0.0.1:$PAYSTREAM_REDIS_PORT"
