#!/usr/bin/env bash
# Stops the workloads started by `make up` (producer, consumer, API), if any.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"
for w in api consumer producer; do
  stop_pidfile "$w" "$PAYSTREAM_VAR/run/$w.pid" 30
done
