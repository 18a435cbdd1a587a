#!/usr/bin/env bash
# Stop the local control plane that up.sh started: every component by the pid
# it recorded, in reverse start order (SIGTERM, then SIGKILL after a grace
# period), then check that no process started from var/cluster is left.
# The etcd data, keys and pid files are removed; logs stay in
# var/cluster/logs/ for a look after the fact (the next up.sh clears them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_pid NAME PID
stop_pid() {
  local name="$1" pid="$2" deadline
  kill -TERM "${pid}" 2>/dev/null || return 0
  deadline=$((SECONDS + 15))
  while kill -0 "${pid}" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "${name} (pid ${pid}) ignored SIGTERM for 15s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.2
  done
}

stopped=0
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  c="${COMPONENTS[i]}"
  if component_running "${c}"; then
    pid="$(cat "$(pid_file "${c}")")"
    log "stopping ${c} (pid ${pid})"
    stop_pid "${c}" "${pid}"
    stopped=$((stopped + 1))
  fi
  rm -f "$(pid_file "${c}")"
done

# Anything still running from our state folder (a component whose pid file
# was lost) is ours too: find it by its command line and stop it by pid.
leftover() {
  local p
  for p in /proc/[0-9]*; do
    [[ "${p##*/}" == "$$" ]] && continue
    tr '\0' ' ' <"${p}/cmdline" 2>/dev/null | grep -q -- "${CLUSTER_DIR}/" && printf '%s\n' "${p##*/}"
  done
  return 0
}
# ... and runs one of our binaries (any cached build) or an etcd.
ours() {
  local exe
  exe="$(readlink "/proc/$1/exe" 2>/dev/null || true)"
  [[ "${exe}" == "${PAYSTREAM_CACHE}/k8s/"* || "${exe}" == */etcd* ]]
}
for pid in $(leftover); do
  ours "${pid}" || continue
  log "stopping leftover process ${pid}: $(tr '\0' ' ' <"/proc/${pid}/cmdline" | cut -c1-120)"
  stop_pid leftover "${pid}"
  stopped=$((stopped + 1))
done

left=()
for pid in $(leftover); do
  ours "${pid}" && left+=("${pid}")
done
if ((${#left[@]} > 0)); then
  die "processes still running after cluster-down: ${left[*]}"
fi

rm -rf "${CLUSTER_DIR}/etcd" "${CLUSTER_DIR}/pki" "${CLUSTER_DIR}/pids"
if ((stopped == 0)); then
  log "cluster was not running; nothing to stop"
else
  log "cluster is down; no component process is left (logs kept in ${CLUSTER_DIR}/logs)"
fi
