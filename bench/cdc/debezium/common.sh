#!/usr/bin/env bash
# Paths shared by bench/cdc/debezium/*.sh. Sourced after stack/lib.sh and
# stack/kafka/common.sh (for kafka_java); never run directly.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this

DBZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DBZ_POM="$DBZ_DIR/pom.xml"
DBZ_VERSION="$(sed -n 's:.*<debezium\.version>\([^<]*\)</debezium\.version>.*:\1:p' "$DBZ_POM" | head -n1)"
[[ -n $DBZ_VERSION ]] || die "cannot read <debezium.version> from $DBZ_POM"

# Jars live outside the clone, one folder per Debezium version:
#   libs/               Kafka Connect's class path
#   plugins/debezium/   the connector, loaded through plugin.path
DBZ_CACHE="$PAYSTREAM_CACHE/debezium/$DBZ_VERSION"
DBZ_HOME="$DBZ_CACHE/home"
DBZ_LIBS="$DBZ_HOME/libs"
DBZ_PLUGINS="$DBZ_HOME/plugins"
DBZ_STAMP="$DBZ_CACHE/home.stamp"   # holds the hash of pom.xml of the last complete copy

dbz_pom_hash() { sha256sum "$DBZ_POM" | cut -d' ' -f1; }

# dbz_ready: the jars for this pom.xml are completely copied.
dbz_ready() {
  [[ -f $DBZ_STAMP && -f $DBZ_LIBS/connect-runtime-$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$DBZ_POM" | head -n1).jar ]] &&
    compgen -G "$DBZ_PLUGINS/debezium/debezium-connector-*-$DBZ_VERSION.jar" >/dev/null &&
    [[ $(cat "$DBZ_STAMP") == "$(dbz_pom_hash)" ]]
}

log()  { printf '[debezium] %s\n' "$*" >&2; }
die()  { printf '[debezium] ERROR: %s\n' "$*" >&2; exit 1; }
