#!/usr/bin/env bash
# Start the private Docker engine (see lib.sh), unless the user's Docker is the
# chosen one. Idempotent: a running private dockerd that answers is reused.
# Installs docker.io if missing. The daemon's default runtime is the
# runc-wrapper (no CAP_SYS_RESOURCE, which these sandboxes lack).
#
# Environment: PAYSTREAM_DOCKER (private|user|auto), PAYSTREAM_CACHE,
# PAYSTREAM_DOCKERD_TIMEOUT (seconds to wait for the daemon, default 90),
# PAYSTREAM_DOCKERD_EXTRA_ARGS (more dockerd flags, split on spaces).
set -euo pipefail
# shellcheck source=e2e/kind/engine/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${PAYSTREAM_ENGINE}" == user ]]; then
  log "using the user's Docker (DOCKER_HOST=${DOCKER_HOST:-<default>}); no private engine to start"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || die "the private Docker engine needs root (run: sudo $0)"

engine_ensure_installed
mkdir -p "${ENGINE_DIR}/bin" "${ENGINE_DATA_ROOT}"

# One up.sh at a time.
exec 9>"${ENGINE_DIR}/up.lock"
flock -w 300 9 || die "another up.sh holds ${ENGINE_DIR}/up.lock"

# The runtime wrapper, installed atomically (a running daemon keeps working).
if ! cmp -s "${ENGINE_LIB_DIR}/runc-wrapper" "${ENGINE_RUNTIME}"; then
  install -m 0755 "${ENGINE_LIB_DIR}/runc-wrapper" "${ENGINE_RUNTIME}.tmp"
  mv -f "${ENGINE_RUNTIME}.tmp" "${ENGINE_RUNTIME}"
fi

check_runtime() {
  local rt
  rt="$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true)"
  [[ "${rt}" == "${ENGINE_RUNTIME_NAME}" ]] ||
    die "the private dockerd's default runtime is '${rt}', not ${ENGINE_RUNTIME_NAME}; restart it: $(dirname "$0")/down.sh && $0"
}

# Record the bridges of the private dockerd's networks, so that down.sh
# removes those and no others; docker0 only if $1 is 1 (we made it).
record_bridges() {
  local names
  names="$(engine_private_bridges)" || { log "warning: could not list the private engine's networks"; return 0; }
  if (($1)); then printf '%s\n' "${names}"; else printf '%s\n' "${names}" | grep -vx docker0 || true; fi |
    engine_record_bridges
}

timeout_s="${PAYSTREAM_DOCKERD_TIMEOUT:-90}"

if pid="$(engine_private_pid)"; then
  # Running (or still starting, from another up.sh): wait for it to answer.
  deadline=$((SECONDS + timeout_s))
  until engine_private_answers; do
    kill -0 "${pid}" 2>/dev/null || break
    ((SECONDS < deadline)) || die "the private dockerd (pid ${pid}) runs but does not answer on ${ENGINE_SOCK}; see ${ENGINE_LOG}, or run down.sh"
    sleep 0.5
  done
  if kill -0 "${pid}" 2>/dev/null; then
    check_runtime
    record_bridges 0
    log "private dockerd already running (pid ${pid}, DOCKER_HOST=${DOCKER_HOST})"
    exit 0
  fi
  log "private dockerd (pid ${pid}) exited while starting; starting it again"
fi

# A stale pidfile (dead or foreign pid) would stop dockerd from starting.
rm -f "${ENGINE_PIDFILE}"
had_docker0=0
ip link show docker0 >/dev/null 2>&1 && had_docker0=1
if ((had_docker0)) && ! grep -qx docker0 "${ENGINE_BRIDGES}" 2>/dev/null; then
  log "warning: docker0 exists and is not the private engine's (another Docker's?); the private dockerd will share it"
fi

# dockerd turns on ip_forward and, when it does, sets FORWARD's policy to DROP:
# note the host's settings before the first start, for down.sh.
if [[ ! -e "${ENGINE_HOST_STATE}" ]]; then
  {
    printf 'ip_forward %s\n' "$(cat /proc/sys/net/ipv4/ip_forward)"
    while read -r b; do printf '%s %s\n' "${b}" "$(engine_forward_policy "${b}")"; done < <(engine_iptables_backends)
  } >"${ENGINE_HOST_STATE}"
fi

extra=()
if [[ -n "${PAYSTREAM_DOCKERD_EXTRA_ARGS:-}" ]]; then
  read -r -a extra <<<"${PAYSTREAM_DOCKERD_EXTRA_ARGS}"
fi

log "starting the private dockerd (data-root ${ENGINE_DATA_ROOT}, log ${ENGINE_LOG})"
printf '\n===== %s up.sh starts dockerd =====\n' "$(date -Is)" >>"${ENGINE_LOG}"
# Its own session, so that the caller's terminal signals do not reach it; a
# clean PATH, no DOCKER_* from the caller, and not our lock's descriptor.
env -u DOCKER_HOST -u DOCKER_BUILDKIT -u DOCKER_CONTEXT PATH="${ENGINE_DAEMON_PATH}" \
  setsid dockerd \
  --data-root "${ENGINE_DATA_ROOT}" \
  --exec-root "${ENGINE_EXEC_ROOT}" \
  --pidfile "${ENGINE_PIDFILE}" \
  -H "unix://${ENGINE_SOCK}" \
  --add-runtime "${ENGINE_RUNTIME_NAME}=${ENGINE_RUNTIME}" \
  --default-runtime "${ENGINE_RUNTIME_NAME}" \
  "${extra[@]}" \
  </dev/null >>"${ENGINE_LOG}" 2>&1 9>&- &
started=$!

deadline=$((SECONDS + timeout_s))
until engine_private_answers; do
  if ! kill -0 "${started}" 2>/dev/null || ((SECONDS >= deadline)); then
    if kill -0 "${started}" 2>/dev/null; then
      why="did not answer on ${ENGINE_SOCK} within ${timeout_s}s"
      kill -TERM "${started}" 2>/dev/null || true
    else
      why="exited"
    fi
    {
      printf '[engine] ERROR: the private dockerd %s; its log is %s. Last lines:\n' "${why}" "${ENGINE_LOG}"
      tail -n 25 "${ENGINE_LOG}" | sed 's/^/  | /'
    } >&2
    exit 1
  fi
  sleep 0.3
done

# docker0 is ours if it did not exist before (a docker0 already recorded stays).
record_bridges $((!had_docker0))

check_runtime
log "private dockerd running (pid $(cat "${ENGINE_PIDFILE}" 2>/dev/null || echo "${started}"), default runtime ${ENGINE_RUNTIME_NAME}); DOCKER_HOST=${DOCKER_HOST}"
