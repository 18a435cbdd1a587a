#!/usr/bin/env bash
# Prints one line per stack server; exit 0 only when all are up.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rc=0
for s in mariadb kafka redis; do
  bash "$STACK_ROOT/stack/$s/status.sh" || rc=3
done
exit $rc
