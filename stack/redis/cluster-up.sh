#!/usr/bin/env bash
# Starts a local Redis Cluster for the Cluster-mode tests: PAYSTREAM_REDIS_CLUSTER_NODES
# primaries (default 3, no replicas) on consecutive loopback ports from
# PAYSTREAM_REDIS_CLUSTER_PORT (default 17001), with the stack's Redis password.
# No persistence, like the standalone Redis. Idempotent: a healthy cluster is
# left alone; a broken or partial one is wiped and created again. Concurrent
# callers (parallel tests) are serialised by a lock.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

BASE="${PAYSTREAM_REDIS_CLUSTER_PORT:-17001}"
COUNT="${PAYSTREAM_REDIS_CLUSTER_NODES:-3}"
DIR="$STACK_VAR/redis-cluster"
(( COUNT >= 3 )) || die "a Redis Cluster needs at least 3 primaries (PAYSTREAM_REDIS_CLUSTER_NODES=$COUNT)"

apt_install redis-server redis-tools
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

ports() { seq "$BASE" $(( BASE + COUNT - 1 )); }
cli() { REDISCLI_AUTH="$PAYSTREAM_REDIS_PASSWORD" redis-cli --no-auth-warning -h 127.0.0.1 -p "$@"; }
ping() { cli "$1" ping 2>/dev/null | grep -q PONG; }
cluster_ok() {
  local info
  info=$(cli "$BASE" cluster info 2>/dev/null | tr -d '\r') || return 1
  grep -q '^cluster_state:ok$' <<<"$info" &&
    grep -q "^cluster_known_nodes:$COUNT$" <<<"$info" &&
    grep -q '^cluster_slots_assigned:16384$' <<<"$info"
}

if cluster_ok; then
  log "Redis Cluster already running on 127.0.0.1:$BASE..$(( BASE + COUNT - 1 ))"
  exit 0
fi

# Anything left is partial or broken: stop it and start from scratch.
bash "$STACK_ROOT/stack/redis/cluster-down.sh" --locked
for port in $(ports); do
  d="$DIR/$port"
  rm -rf "$d"
  mkdir -p "$d"
  cat > "$d/redis.conf" <<CONF
bind 127.0.0.1
port $port
cluster-enabled yes
cluster-config-file $d/nodes.conf
cluster-node-timeout 5000
requirepass $PAYSTREAM_REDIS_PASSWORD
masterauth $PAYSTREAM_REDIS_PASSWORD
daemonize no
pidfile $d/redis.pid
logfile $d/redis.log
dir $d
save ""
appendonly no
maxmemory-policy noeviction
CONF
  setsid nohup redis-server "$d/redis.conf" >>"$d/redis.log" 2>&1 < /dev/null 9>&- &
done
for port in $(ports); do
  if ! wait_until 30 "Redis Cluster node $port" ping "$port"; then
    tail -n 20 "$DIR/$port/redis.log" >&2 || true
    die "Redis Cluster node 127.0.0.1:$port did not answer PING within 30s; its log is $DIR/$port/redis.log"
  fi
done
nodes=()
for port in $(ports); do nodes+=("127.0.0.1:$port"); done
log "creating the Redis Cluster ${nodes[*]}"
REDISCLI_AUTH="$PAYSTREAM_REDIS_PASSWORD" redis-cli --no-auth-warning --cluster create "${nodes[@]}" \
  --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 ||
  { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed (log above)"; }
if ! wait_until 60 "Redis Cluster state ok" cluster_ok; then
  cli "$BASE" cluster info >&2 || true
  die "the Redis Cluster did not reach cluster_state:ok within 60s; logs under $DIR"
fi
log "Redis Cluster ready: ${nodes[*]}"
