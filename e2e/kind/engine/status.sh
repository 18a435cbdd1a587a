#!/usr/bin/env bash
# One line about the container engine: which one, its pid, socket and the size
# of its data-root. Exits 0 when the chosen engine answers, else 1.
set -euo pipefail
# shellcheck source=e2e/kind/engine/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${PAYSTREAM_ENGINE}" == user ]]; then
  root="$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || true)"
  printf 'engine=user host=%s root=%s\n' "${DOCKER_HOST:-<default>}" "${root:-?}"
  exit 0
fi

size="$(du -sxh "${ENGINE_DATA_ROOT}" 2>/dev/null | cut -f1 || true)"
if pid="$(engine_private_pid)"; then
  state=running
  engine_private_answers || state="running, not answering"
else
  pid=- state=stopped
fi
printf 'engine=private state=%s pid=%s socket=%s data-root=%s size=%s\n' \
  "${state}" "${pid}" "${ENGINE_SOCK}" "${ENGINE_DATA_ROOT}" "${size:-0}"
[[ "${state}" == running ]]
