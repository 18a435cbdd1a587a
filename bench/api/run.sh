#!/usr/bin/env bash
# make bench-api: a benchmark, not a test. Measures cached reads of the payment
# API (GET /v1/purchases/{id}, served from the Redis read model) at 100, 1,000
# and 10,000 keep-alive connections, in the same run and on the same machine as
#   - the same reads with the in-process near cache on (a second server),
#   - the HTTP ceiling: the same server returning a constant body of the same size,
#   - reads straight from MySQL with no cache (same server, same auth),
#   - redis-benchmark GET of the same payload.
# Throughput (req/s) comes from closed-loop runs (as fast as the server answers);
# the latency percentiles p50/p99/p99.9 come from open-loop runs at a fixed
# offered rate with oha's latency correction (no coordinated omission).
# Writes bench/results/api-<UTC time>.json and .md and prints the table.
#
# Knobs: BENCH_API_SECS (seconds per point, default 4), BENCH_API_CONNS
# (default "100 1000 10000"), BENCH_API_RATE_FRACTION (open-loop rate as a
# fraction of the cached closed-loop throughput at that connection count,
# default 0.5), BENCH_API_REPEAT (measurements of every point, default 2: the
# report gives the median and the spread; the open-loop rate is fixed from the
# first repetition so every repetition offers the same load).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source stack/lib.sh

export PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-$HOME/.cache/paystream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PAYSTREAM_CACHE/target}"
SECS="${BENCH_API_SECS:-4}"
CONNS="${BENCH_API_CONNS:-100 1000 10000}"
FRACTION="${BENCH_API_RATE_FRACTION:-0.5}"
REPEAT="${BENCH_API_REPEAT:-2}"
MYSQL_ADMIN_PASSWORD="${PAYSTREAM_MYSQL_ADMIN_PASSWORD:-paystream-admin}"
MYSQL_APP_PASSWORD="${PAYSTREAM_MYSQL_APP_PASSWORD:-paystream-app}"
SECRET="bench-api-secret-0123456789abcdef-0123"
PREFIX="apibench"
WORK="$PAYSTREAM_VAR/bench-api"
mkdir -p "$WORK" bench/results
HELPER="bench/api/helper.py"

# 10,000 connections need 10,000+ descriptors in oha and in the server, each.
max_conns=0
for c in $CONNS; do [ "$c" -gt "$max_conns" ] && max_conns=$c; done
need=$((max_conns + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  echo "bench-api: the hard file-descriptor limit is $hard; $need are needed." >&2
  echo "  raise it (e.g. 'ulimit -Hn 65536' as root, or nofile in /etc/security/limits.conf)" >&2
  exit 1
fi
ulimit -n "$hard"
echo "bench-api: file-descriptor limit $(ulimit -n)"

OHA="$PAYSTREAM_CACHE/bin/oha"
if [ ! -x "$OHA" ]; then
  echo "bench-api: installing oha from crates.io into $PAYSTREAM_CACHE/bin (once)"
  CARGO_TARGET_DIR="$PAYSTREAM_CACHE/oha-build" cargo install oha --locked --root "$PAYSTREAM_CACHE"
fi
command -v redis-benchmark >/dev/null || { echo "bench-api: redis-benchmark is missing (apt-get install redis-tools)" >&2; exit 1; }

# The same package set as make's bench-build (a no-op after it); alone,
# just the API.
echo "bench-api: building paystream-api (release)"
# shellcheck disable=SC2086 # a list of -p flags
cargo build --release --locked ${BENCH_PACKAGES:--p paystream-api}
API_BIN="$CARGO_TARGET_DIR/release/paystream-api"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(port)
NEAR_PORT=$(port)
API="http://127.0.0.1:$API_PORT"
NEAR="http://127.0.0.1:$NEAR_PORT"
PIDS=()
stop_apis() {
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
  PIDS=()
}
trap stop_apis EXIT

start_api() { # name port body-size extra-flags...
  local name=$1 port=$2 size=$3
  shift 3
  "$API_BIN" \
    --listen-addr "127.0.0.1:$port" --ops-addr "127.0.0.1:$(port)" \
    --mysql-port "$PAYSTREAM_MYSQL_PORT" --mysql-user paystream_app --mysql-password "$MYSQL_APP_PASSWORD" \
    --mysql-max-connections 32 --mysql-read-concurrency 32 --mysql-read-wait-ms 10000 \
    --redis-url "redis://:$PAYSTREAM_REDIS_PASSWORD@127.0.0.1:$PAYSTREAM_REDIS_PORT/0" \
    --redis-key-prefix "$PREFIX" --topic-prefix "$PREFIX" --redis-timeout-ms 5000 \
    --jwt-secret "$SECRET" --request-timeout-ms 60000 \
    --bench-routes true --bench-body-bytes "$size" --log-filter warn "$@" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench-api: the API did not become ready; see $WORK/$name.log" >&2
  exit 1
}

# The hot key: a user, a package and one purchase of our own.
echo "bench-api: seeding the hot key"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
USER_ID=$(mariadb -h127.0.0.1 -P"$PAYSTREAM_MYSQL_PORT" -upaystream_admin -p"$MYSQL_ADMIN_PASSWORD" payments -N -e \
  "INSERT INTO users (email, display_name) VALUES ('bench-api-$stamp-$$@bench.paystream', 'bench'); SELECT LAST_INSERT_ID();")
PKG_ID=$(mariadb -h127.0.0.1 -P"$PAYSTREAM_MYSQL_PORT" -upaystream_admin -p"$MYSQL_ADMIN_PASSWORD" payments -N -e \
  "INSERT INTO packages (code, name, price, currency) VALUES ('bench-api-$stamp-$$', 'Benchmark pack', 19.99, 'EUR'); SELECT LAST_INSERT_ID();")
TOKEN=$(python3 "$HELPER" token "$SECRET" "$USER_ID")
start_api api "$API_PORT" 512
PURCHASE_ID=$(curl -fsS -X POST "$API/v1/purchases" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -H "Idempotency-Key: bench-$stamp" \
  -d "{\"package_id\":$PKG_ID,\"quantity\":3}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -H "Authorization: Bearer $TOKEN" "$API/v1/purchases/$PURCHASE_ID" >"$WORK/payload.json"
curl -fsS -H "Authorization: Bearer $TOKEN" "$API/v1/purchases/$PURCHASE_ID" >/dev/null
SIZE=$(stat -c %s "$WORK/payload.json")
echo "bench-api: purchase $PURCHASE_ID, payload $SIZE bytes"
stop_apis
start_api api "$API_PORT" "$SIZE"
start_api near "$NEAR_PORT" "$SIZE" --near-cache-capacity 100000
for _ in 1 2 3; do curl -fsS -H "Authorization: Bearer $TOKEN" "$NEAR/v1/purchases/$PURCHASE_ID" >/dev/null; done
curl -fsS "$API/bench/constant" >"$WORK/constant.json"
[ "$(stat -c %s "$WORK/constant.json")" = "$SIZE" ] || { echo "constant body size mismatch" >&2; exit 1; }
# The same payload for redis-benchmark.
redis-cli -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" -a "$PAYSTREAM_REDIS_PASSWORD" --no-auth-warning \
  -x SET "$PREFIX:redis-benchmark:hot" <"$WORK/payload.json" >/dev/null

CACHED="$API/v1/purchases/$PURCHASE_ID"
NEARED="$NEAR/v1/purchases/$PURCHASE_ID"
MYSQL="$API/bench/mysql/purchases/$PURCHASE_ID"
CONST="$API/bench/constant"
RAW="$WORK/raw"
rm -rf "$RAW"; mkdir -p "$RAW"

oha_run() { # name conns repetition url [rate]
  local name=$1 c=$2 r=$3 url=$4 rate=${5:-}
  local args=(-z "${SECS}s" -c "$c" --no-tui --output-format json -H "Authorization: Bearer $TOKEN")
  if [ -n "$rate" ]; then args+=(-q "$rate" --latency-correction); fi
  "$OHA" "${args[@]}" "$url" >"$RAW/$name-$c-r$r${rate:+-open}.json" 2>"$RAW/$name-$c-r$r.err" || true
  # Let the previous run's connections close before the next one starts.
  # A fixed pause, not a wait for the server's established connections to
  # reach zero: with that wait (tried 2026-11-27) the next run began while
  # the server was still tearing down the last 10,000, and the cached
  # read's open-loop p99 at 10,000 connections read 825 ms instead of 39.
  # A second after thousands of connections; a thousand or fewer close in
  # well under the fifth of a second they get.
  if [ "$c" -gt 1000 ]; then sleep 1; else sleep 0.2; fi
}

for c in $CONNS; do
  rate=""
  for r in $(seq 1 "$REPEAT"); do
    echo "bench-api: $c connections, repetition $r of $REPEAT"
    oha_run cached "$c" "$r" "$CACHED"
    if [ -z "$rate" ]; then
      rate=$(python3 "$HELPER" rate "$RAW/cached-$c-r1.json" "$FRACTION")
      echo "  open-loop rate $rate req/s"
      echo "$rate" >"$RAW/rate-$c"
    fi
    oha_run cached "$c" "$r" "$CACHED" "$rate"
    oha_run near "$c" "$r" "$NEARED"
    oha_run near "$c" "$r" "$NEARED" "$rate"
    oha_run ceiling "$c" "$r" "$CONST"
    oha_run ceiling "$c" "$r" "$CONST" "$rate"
    oha_run mysql "$c" "$r" "$MYSQL"
    oha_run mysql "$c" "$r" "$MYSQL" "$rate"
    n=$(python3 "$HELPER" requests "$RAW/cached-$c-r1.json")
    redis-benchmark -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" -a "$PAYSTREAM_REDIS_PASSWORD" \
      -c "$c" -n "$n" --threads 2 GET "$PREFIX:redis-benchmark:hot" >"$RAW/redis-$c-r$r.txt" 2>&1 || true
  done
done

stop_apis
python3 "$HELPER" report "$RAW" "bench/results/api-$stamp" "$SECS" "$SIZE" "$CONNS" "$REPEAT"
# Leave no benchmark keys behind (the rows stay: they belong to our own user).
redis-cli -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" -a "$PAYSTREAM_REDIS_PASSWORD" --no-auth-warning \
  --scan --pattern "$PREFIX:*" | while read -r k; do
    redis-cli -h 127.0.0.1 -p "$PAYSTREAM_REDIS_PORT" -a "$PAYSTREAM_REDIS_PASSWORD" --no-auth-warning DEL "$k" >/dev/null
  done
