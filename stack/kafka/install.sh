#!/usr/bin/env bash
# Installs what the local Kafka server needs: a Java >= 17 runtime, Maven, kcat,
# and the broker's jars from Maven Central (stack/kafka/pom.xml) into
# $PAYSTREAM_CACHE/kafka/<version>/libs. Idempotent: a complete copy for the
# current pom.xml is kept and reused.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Java >= 17 (Kafka 4.x brokers need 17).
if ! java_bin=$(kafka_java); then
  log "no Java >= 17 found; installing OpenJDK 17"
  apt_install openjdk-17-jre-headless
  java_bin=$(kafka_java) || die "OpenJDK 17 installed but no java >= 17 found"
fi

# kcat: readiness probe and the smoke test's producer/consumer.
command -v kcat >/dev/null 2>&1 || apt_install kcat

if kafka_libs_ready; then
  exit 0
fi

command -v mvn >/dev/null 2>&1 || apt_install maven

mkdir -p "$KAFKA_CACHE"
# One installer at a time (e.g. two start.sh racing).
exec 9>"$KAFKA_CACHE/.install.lock"
flock 9
if kafka_libs_ready; then
  exit 0
fi

log "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
tmp=$(mktemp -d "$KAFKA_CACHE/libs.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Maven runs on the same Java as the broker unless JAVA_HOME says otherwise.
if [[ -z ${JAVA_HOME:-} ]]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$java_bin")")")"
  export JAVA_HOME
fi
mvn_log="$KAFKA_CACHE/mvn.log"
if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" \
     dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
  tail -n 40 "$mvn_log" | sed 's/^/    /' >&2
  die "Maven could not copy the Kafka jars; its output: $mvn_log"
fi

[[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar && -f $tmp/kafka-clients-$KAFKA_VERSION.jar ]] \
  || die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing from the copy"
# Exactly one SLF4J binding: ours (log4j-slf4j-impl).
shopt -s nullglob
extra=("$tmp"/log4j-slf4j2-impl-*.jar "$tmp"/slf4j-reload4j-*.jar "$tmp"/slf4j-log4j12-*.jar \
       "$tmp"/slf4j-simple-*.jar "$tmp"/logback-classic-*.jar)
shopt -u nullglob
(( ${#extra[@]} == 0 )) || die "another SLF4J binding ended up in the Kafka classpath: ${extra[*]##*/}"

rm -rf "$KAFKA_LIBS" "$KAFKA_STAMP"
mv "$tmp" "$KAFKA_LIBS"
trap - EXIT
kafka_pom_hash >"$KAFKA_STAMP"
log "Kafka $KAFKA_VERSION installed ($(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$KAFKA_LIBS" | cut -f1))"
