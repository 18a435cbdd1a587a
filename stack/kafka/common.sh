#!/usr/bin/env bash
# Kafka-specific paths and helpers, shared by stack/kafka/*.sh.
# Sourced after ../lib.sh; never run directly.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this

KAFKA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_POM="$KAFKA_DIR/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$KAFKA_POM" | head -n1)"
[[ -n $KAFKA_VERSION ]] || die "cannot read <kafka.version> from $KAFKA_POM"

# Jars live outside the clone, one folder per Kafka version.
KAFKA_CACHE="$PAYSTREAM_CACHE/kafka/$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_CACHE/libs"
KAFKA_STAMP="$KAFKA_CACHE/libs.stamp"   # holds the hash of pom.xml of the last complete copy

# Runtime state (git-ignored var/ folder).
KAFKA_VAR="$STACK_VAR/kafka"
KAFKA_DATA="$KAFKA_VAR/data"
KAFKA_LOG_DIRS="$KAFKA_DATA/logs"        # Kafka's log.dirs (topic partitions, metadata log)
KAFKA_CLUSTER_ID_FILE="$KAFKA_DATA/cluster.id"
KAFKA_CONF="$KAFKA_VAR/server.properties"
KAFKA_LOG="$KAFKA_VAR/kafka.log"
KAFKA_PIDFILE="$KAFKA_VAR/kafka.pid"
KAFKA_LOG4J="$KAFKA_DIR/log4j2.properties"
KAFKA_TOOLS_LOG4J="$KAFKA_DIR/log4j2-tools.properties"

KAFKA_BOOTSTRAP="127.0.0.1:$PAYSTREAM_KAFKA_PORT"
KAFKA_CONTROLLER="127.0.0.1:$PAYSTREAM_KAFKA_CONTROLLER_PORT"

# An extra listener, ADDRESS:PORT, for clients that cannot reach loopback: the
# pods of a kind cluster reach the host at their docker network's gateway
# (e2e/kind/hoststack.sh writes the file while such a cluster exists and
# removes it with the cluster). Kafka tells clients the address of the
# listener they came in on, so a TCP forwarder would not do: the broker has to
# listen there itself. PAYSTREAM_KAFKA_EXTRA_LISTENER overrides the file.
KAFKA_EXTRA_LISTENER_FILE="$KAFKA_VAR/extra-listener"
kafka_extra_listener() {
  if [[ -n ${PAYSTREAM_KAFKA_EXTRA_LISTENER:-} ]]; then
    printf '%s' "$PAYSTREAM_KAFKA_EXTRA_LISTENER"
  elif [[ -s $KAFKA_EXTRA_LISTENER_FILE ]]; then
    tr -d '[:space:]' <"$KAFKA_EXTRA_LISTENER_FILE"
  fi
}

# kafka_listeners: the listeners= value the server must run with.
kafka_listeners() {
  local extra; extra=$(kafka_extra_listener)
  printf 'PLAINTEXT://%s,CONTROLLER://%s%s' "$KAFKA_BOOTSTRAP" "$KAFKA_CONTROLLER" "${extra:+,EXTRA://$extra}"
}

# Modest heap: the box has 2 cores and shares its memory with the rest of the stack.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_START_DEADLINE="${KAFKA_START_DEADLINE:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-120}"

# java_major JAVA: prints the feature release (8, 11, 17, 21, ...) of a java binary.
java_major() {
  local v
  v=$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)
  [[ -n $v ]] || return 1
  v=${v#1.}                 # 1.8.0_402 -> 8.0_402
  v=${v%%[!0-9]*}           # 17.0.15 -> 17, 21-ea -> 21
  [[ -n $v ]] || return 1
  printf '%s\n' "$v"
}

# kafka_java: prints the first java >= 17 among $KAFKA_JAVA, $JAVA_HOME, PATH
# and Debian's OpenJDK 17; fails when there is none.
kafka_java() {
  local c m
  for c in "${KAFKA_JAVA:-}" "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)" \
           /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    [[ -n $c && -x $c ]] || continue
    m=$(java_major "$c") || continue
    if (( m >= 17 )); then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

kafka_pom_hash() { sha256sum "$KAFKA_POM" | cut -d' ' -f1; }

# kafka_libs_ready: the jars for this pom.xml are completely copied.
kafka_libs_ready() {
  [[ -f $KAFKA_STAMP && -f $KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar ]] &&
    [[ $(cat "$KAFKA_STAMP") == "$(kafka_pom_hash)" ]]
}

# kafka_probe: a metadata request answered by broker 1 on our listener, with
# every existing partition led (after a restart leaders come back a moment
# after the listener opens).
kafka_probe() {
  command -v kcat >/dev/null 2>&1 || return 1
  local md
  md=$(kcat -L -J -b "$KAFKA_BOOTSTRAP" -m 2 2>/dev/null) || return 1
  [[ $md == *'"brokers":[{"id":1,'* && $md != *'"leader":-1'* ]]
}

# kafka_server_pids: java processes running kafka.Kafka with our server.properties,
# whatever the pid file says.
kafka_server_pids() {
  local re p
  re="kafka\\.Kafka $(printf '%s' "$KAFKA_CONF" | sed 's/[][\.*^$+?(){}|]/\\&/g')( |\$)"
  for p in $(pgrep -f -- "$re" || true); do
    [[ $(ps -o comm= -p "$p" 2>/dev/null) == java ]] && printf '%s\n' "$p"
  done
  return 0
}

# kafka_tail_log [N]: prints where the log is and its last N lines.
kafka_tail_log() {
  local n=${1:-40}
  if [[ -f $KAFKA_LOG ]]; then
    log "last $n lines of $KAFKA_LOG:"
    tail -n "$n" "$KAFKA_LOG" | sed 's/^/    /' >&2
  else
    log "no log file at $KAFKA_LOG"
  fi
}

# kafka_port_busy PORT: something already accepts connections on 127.0.0.1:PORT.
kafka_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# kafka_drop_stale_pidfile: removes the pid file when its pid is gone or is no
# longer our server (pids get reused, e.g. after a reboot), so that nothing
# signals a stranger.
kafka_drop_stale_pidfile() {
  [[ -f $KAFKA_PIDFILE ]] || return 0
  local pid; pid=$(cat "$KAFKA_PIDFILE" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kafka_server_pids | grep -x "$pid" >/dev/null; then
    return 0
  fi
  rm -f "$KAFKA_PIDFILE"
}
