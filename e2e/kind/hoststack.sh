#!/usr/bin/env bash
# The local stack (MariaDB, Kafka, Redis on loopback) made reachable from the
# pods of the kind cluster, at the gateway of the cluster's docker network:
#
#   hoststack.sh up GATEWAY   Kafka gets a listener on GATEWAY:$PAYSTREAM_KAFKA_KIND_PORT
#                             (19094; it is restarted once for it), and
#                             forwarders GATEWAY:13306 -> MariaDB, GATEWAY:16379 -> Redis
#   hoststack.sh down         forwarders stopped, Kafka's extra listener dropped
#   hoststack.sh env          prints the addresses the pods use (for scripts)
#
# Why the host stack and not MariaDB, Kafka and Redis in the cluster: the
# tests compare what the pods serve with MariaDB and Kafka, which they read
# from the host as in every other suite; one stack means one schema, one set
# of credentials and no extra images or memory; and a payment team runs its
# databases outside the cluster too (docs/adr/0010-kind-real-pods.md).
# Nothing listens on anything but loopback and that one bridge address.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../stack/lib.sh"
source "$STACK_ROOT/stack/kafka/common.sh"

KIND_VAR="$PAYSTREAM_VAR/kind"
KAFKA_KIND_PORT="${PAYSTREAM_KAFKA_KIND_PORT:-19094}"
GATEWAY_FILE="$KIND_VAR/gateway"

forward_pidfile() { printf '%s/forward-%s.pid' "$KIND_VAR" "$1"; }

# forward NAME GATEWAY PORT: a TCP forwarder GATEWAY:PORT -> 127.0.0.1:PORT.
forward() {
  local name=$1 gw=$2 port=$3 pidfile
  pidfile=$(forward_pidfile "$name")
  if pid_alive "$pidfile" && tr '\0' ' ' <"/proc/$(cat "$pidfile")/cmdline" | grep -q "bind=$gw"; then
    return 0
  fi
  stop_pidfile "forwarder $name" "$pidfile" 5
  setsid nohup socat "TCP-LISTEN:$port,bind=$gw,fork,reuseaddr" "TCP:127.0.0.1:$port" \
    >>"$KIND_VAR/forward-$name.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until 10 "forwarder $name" bash -c "exec 3<>/dev/tcp/$gw/$port" ||
    die "the forwarder $gw:$port -> 127.0.0.1:$port did not come up; see $KIND_VAR/forward-$name.log"
}

up() {
  local gw=$1
  [[ $gw =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not an IPv4 address: '$gw'"
  ip -o -4 addr show | grep -q " inet $gw/" || die "no interface of this machine has $gw (is the kind network up?)"
  apt_install socat
  mkdir -p "$KIND_VAR" "$KAFKA_VAR"
  echo "$gw" >"$GATEWAY_FILE"
  echo "$gw:$KAFKA_KIND_PORT" >"$KAFKA_EXTRA_LISTENER_FILE"
  bash "$STACK_ROOT/stack/up.sh" >/dev/null
  forward mariadb "$gw" "$PAYSTREAM_MYSQL_PORT"
  forward redis "$gw" "$PAYSTREAM_REDIS_PORT"
  log "the stack is reachable from the kind network at $gw (MariaDB $PAYSTREAM_MYSQL_PORT, Redis $PAYSTREAM_REDIS_PORT, Kafka $KAFKA_KIND_PORT)"
}

down() {
  stop_pidfile "forwarder mariadb" "$(forward_pidfile mariadb)" 5
  stop_pidfile "forwarder redis" "$(forward_pidfile redis)" 5
  rm -f "$GATEWAY_FILE"
  if [[ -s $KAFKA_EXTRA_LISTENER_FILE ]]; then
    rm -f "$KAFKA_EXTRA_LISTENER_FILE"
    # A running Kafka still listens on the bridge's address: restart it
    # without that listener (start.sh sees the difference).
    if pid_alive "$KAFKA_PIDFILE"; then bash "$STACK_ROOT/stack/kafka/start.sh"; fi
  fi
}

env_() {
  [[ -s $GATEWAY_FILE ]] || die "the stack is not exposed to a kind network (hoststack.sh up GATEWAY)"
  local gw; gw=$(cat "$GATEWAY_FILE")
  printf 'KIND_GATEWAY=%s\nKIND_MYSQL=%s:%s\nKIND_KAFKA=%s:%s\nKIND_REDIS=%s:%s\n' \
    "$gw" "$gw" "$PAYSTREAM_MYSQL_PORT" "$gw" "$KAFKA_KIND_PORT" "$gw" "$PAYSTREAM_REDIS_PORT"
}

case "${1:-}" in
  up) up "${2:?usage: hoststack.sh up GATEWAY}" ;;
  down) down ;;
  env) env_ ;;
  *) die "usage: hoststack.sh up GATEWAY | down | env" ;;
esac
