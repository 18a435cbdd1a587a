#!/usr/bin/env bash
# Stop the local control plane that up.sh started: every component by the pid
# it recorded, in reverse start order (SIGTERM, then SIGKILL after a grace
# period), then check that no process started from var/cluster is left.
# The etcd data, keys and pid files are removed; logs stay in
# var/cluster/logs/ for a look after the fact (the next up.sh clears them).
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# How long a component may take to stop after SIGTERM before it gets
# SIGKILL. 0 sends SIGKILL straight away: the benchmark's reset between
# rounds (bench/src/operator/reset.rs) does that, since the etcd data goes
# anyway.
STOP_GRACE_SECS="${CONTROLPLANE_STOP_GRACE_SECS:-15}"
[[ "${STOP_GRACE_SECS}" =~ ^[0-9]+$ ]] || die "CONTROLPLANE_STOP_GRACE_SECS must be whole seconds, not '${STOP_GRACE_SECS}'"

# exited PID: the process is gone, or a zombie with no thread left but its
# first.
exited() {
  local tasks
  [[ -e "/proc/$1" ]] || return 0
  grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null || return 1
  tasks=(/proc/"$1"/task/*)
  ((${#tasks[@]} <= 1))
}

# stop_pids PID... : SIGTERM to all, then wait for all; SIGKILL whatever
# ignores SIGTERM for STOP_GRACE_SECS.
stop_pids() {
  local pid deadline alive
  if ((STOP_GRACE_SECS == 0)); then
    kill -KILL "$@" 2>/dev/null || true
    # Until each has exited: gone, or a zombie whose threads have all gone
    # too (only then are its sockets closed; up.sh needs the ports).
    for pid in "$@"; do
      deadline=$((SECONDS + 5))
      until exited "${pid}"; do
        if ((SECONDS >= deadline)); then
          log "pid ${pid} has not exited 5s after SIGKILL"
          break
        fi
        sleep 0.05
      done
    done
    return 0
  fi
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + STOP_GRACE_SECS))
  while :; do
    alive=()
    for pid in "$@"; do kill -0 "${pid}" 2>/dev/null && alive+=("${pid}"); done
    ((${#alive[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      log "pid(s) ${alive[*]} ignored SIGTERM for ${STOP_GRACE_SECS}s; sending SIGKILL"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.1
  done
}

# Stop in three waves: the API's clients together, then the apiserver, then
# etcd, so that nothing loses its backend while it is still serving.
stopped=0
for wave in "metrics-server kwok kube-scheduler kube-controller-manager" "kube-apiserver" "etcd"; do
  pids=()
  for c in ${wave}; do
    if component_running "${c}"; then
      pid="$(cat "$(pid_file "${c}")")"
      log "stopping ${c} (pid ${pid})"
      pids+=("${pid}")
      stopped=$((stopped + 1))
    fi
    rm -f "$(pid_file "${c}")"
  done
  ((${#pids[@]} == 0)) || stop_pids "${pids[@]}"
done

# Anything still running from our state folder (a component whose pid file
# was lost) is ours too: find it by its command line and stop it by pid.
leftover() {
  local p
  for p in /proc/[0-9]*; do
    [[ "${p##*/}" == "$$" ]] && continue
    tr '\0' ' ' 2>/dev/null <"${p}/cmdline" | grep -q -- "${CLUSTER_DIR}/" && printf '%s\n' "${p##*/}"
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
  log "stopping leftover process ${pid}: $({ tr '\0' ' ' <"/proc/${pid}/cmdline"; } 2>/dev/null | cut -c1-120)"
  stop_pids "${pid}"
  stopped=$((stopped + 1))
done

left=()
for pid in $(leftover); do
  ours "${pid}" && left+=("${pid}")
done
if ((${#left[@]} > 0)); then
  die "processes still running after cluster-down: ${left[*]}"
fi

rm -rf "${CLUSTER_DIR}/etcd" "${CLUSTER_DIR}/pki" "${CLUSTER_DIR}/pids" \
  "${CLUSTER_DIR}/kubeconfig" "${CLUSTER_DIR}/kubeconfigs"
if ((stopped == 0)); then
  log "cluster was not running; nothing to stop"
else
  log "cluster is down; no component process is left (logs kept in ${CLUSTER_DIR}/logs)"
fi
