#!/usr/bin/env bash
# Stops the stack and wipes its data (databases, topics, certificates, logs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$STACK_ROOT/stack/down.sh"
rm -rf "$STACK_VAR"
log "wiped $STACK_VAR"
