#!/usr/bin/env bash
# Stops the local stack and checks that none of its processes is left.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rc=0
bash "$STACK_ROOT/stack/kafka/stop.sh" || rc=1
bash "$STACK_ROOT/stack/redis/stop.sh" || rc=1
bash "$STACK_ROOT/stack/redis/cluster-down.sh" || rc=1
bash "$STACK_ROOT/stack/mariadb/stop.sh" || rc=1
left=$(pgrep -af "$STACK_VAR" || true)
if [[ -n "$left" ]]; then
  printf '%s\n' "$left" >&2
  die "stack processes are still running (above)"
fi
exit $rc
