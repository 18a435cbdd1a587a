#!/usr/bin/env bash
# Installs what the CDC benchmark needs to run Debezium: Kafka Connect's jars
# and the Debezium connector plugin from Maven Central (bench/cdc/debezium/pom.xml)
# into $PAYSTREAM_CACHE/debezium/<version>/home/{libs,plugins/debezium}.
# Idempotent: a complete copy for the current pom.xml is kept and reused.
# Prints nothing on success when the copy is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../../stack/lib.sh"
source "$here/../../../stack/kafka/common.sh"
source "$here/common.sh"

# The same Java >= 17 as the broker (Kafka 4.x's Connect needs 17).
java_bin=$(kafka_java) || die "no Java >= 17; run stack/kafka/install.sh (make stack-up) first"

if dbz_ready; then
  exit 0
fi

command -v mvn >/dev/null 2>&1 || apt_install maven

mkdir -p "$DBZ_CACHE"
# One installer at a time.
exec 9>"$DBZ_CACHE/.install.lock"
flock 9
if dbz_ready; then
  exit 0
fi

log "fetching Kafka Connect and Debezium $DBZ_VERSION jars with Maven into $DBZ_HOME"
tmp=$(mktemp -d "$DBZ_CACHE/home.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [[ -z ${JAVA_HOME:-} ]]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$java_bin")")")"
  export JAVA_HOME
fi
mvn_log="$DBZ_CACHE/mvn.log"
: >"$mvn_log"
copy() { # PROFILE DEST
  mvn -q -B -Dstyle.color=never -f "$DBZ_POM" -P "$1" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$2" >>"$mvn_log" 2>&1
}
if ! copy connect "$tmp/libs" || ! copy connector "$tmp/plugins/debezium"; then
  tail -n 40 "$mvn_log" | sed 's/^/    /' >&2
  die "Maven could not copy the Debezium/Connect jars; its output: $mvn_log"
fi
compgen -G "$tmp/libs/connect-runtime-*.jar" >/dev/null \
  || die "Maven finished but connect-runtime is missing from the copy"
compgen -G "$tmp/plugins/debezium/debezium-connector-*-$DBZ_VERSION.jar" >/dev/null \
  || die "Maven finished but the Debezium $DBZ_VERSION connector is missing from the copy"
# Kafka's classes come from the worker only.
if compgen -G "$tmp/plugins/debezium/kafka-clients-*.jar" >/dev/null; then
  die "kafka-clients ended up in the plugin folder; fix the exclusions in $DBZ_POM"
fi

rm -rf "$DBZ_HOME" "$DBZ_STAMP"
mv "$tmp" "$DBZ_HOME"
trap - EXIT
dbz_pom_hash >"$DBZ_STAMP"
log "Debezium $DBZ_VERSION on Kafka Connect installed ($(find "$DBZ_HOME" -name '*.jar' | wc -l) jars, $(du -sh "$DBZ_HOME" | cut -f1))"
