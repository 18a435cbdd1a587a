#!/usr/bin/env bash
# Stop the private Docker engine (see lib.sh) and remove what it left on the
# host: its containers (killed, not removed: they stay in the data-root), the
# dockerd, its containerd and shims, mounts under its exec-root and data-root,
# its bridges and the iptables chains and rules Docker adds. Idempotent.
# Images and containers persist in $PAYSTREAM_CACHE/docker/data.
#
# It targets only what the private engine made: bridges recorded by up.sh and
# down.sh (or named after the networks in its data-root), processes under its
# exec-root. With another dockerd running, docker0 and the shared DOCKER
# chains are left alone. When the user's Docker is the chosen engine, it does
# nothing at all.
set -euo pipefail
# shellcheck source=e2e/kind/engine/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${PAYSTREAM_ENGINE}" == user ]]; then
  log "the user's Docker is in use (PAYSTREAM_DOCKER=${PAYSTREAM_DOCKER}); nothing to stop"
  exit 0
fi

# Mount points under the private engine's exec-root or data-root, deepest first.
our_mounts() {
  local mp
  # Field 5 of mountinfo is the mount point, with spaces and the like as \ooo.
  while read -r _ _ _ _ mp _; do
    mp="$(printf '%b' "${mp}")"
    case "${mp}" in
      "${ENGINE_EXEC_ROOT}" | "${ENGINE_EXEC_ROOT}"/* | "${ENGINE_DATA_ROOT}" | "${ENGINE_DATA_ROOT}"/*) printf '%s\n' "${mp}" ;;
    esac
  done </proc/self/mountinfo | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

pid="$(engine_private_pid || true)"
if [[ -z "${pid}" && ! -e "${ENGINE_BRIDGES}" && ! -e "${ENGINE_HOST_STATE}" && ! -e "${ENGINE_EXEC_ROOT}" && -z "$(our_mounts)" ]]; then
  log "the private dockerd is not running; nothing to do"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || die "stopping the private Docker engine needs root (run: sudo $0)"

mkdir -p "${ENGINE_DIR}"
exec 9>"${ENGINE_DIR}/up.lock"
flock -w 300 9 || die "another up.sh or down.sh holds ${ENGINE_DIR}/up.lock"
pid="$(engine_private_pid || true)"

# wait_gone SECONDS PID...: true once none of the pids lives.
wait_gone() {
  local deadline=$((SECONDS + $1)) p alive
  shift
  while :; do
    alive=0
    for p in "$@"; do kill -0 "${p}" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# stop NAME SECONDS PID...: SIGTERM, wait, then SIGKILL.
stop() {
  local name=$1 secs=$2
  shift 2
  (($#)) || return 0
  log "stopping ${name} (pid $*)"
  kill -TERM "$@" 2>/dev/null || true
  if ! wait_gone "${secs}" "$@"; then
    log "${name} still runs after ${secs}s; SIGKILL"
    kill -KILL "$@" 2>/dev/null || true
    wait_gone 10 "$@" || die "${name} (pid $*) survived SIGKILL"
  fi
}

# Processes whose command line mentions the exec-root, named like $1 (regex).
procs_under_exec_root() {
  local p
  for p in $(pgrep -f -- "$1" || true); do
    [[ "${p}" == "$$" ]] && continue
    tr '\0' ' ' <"/proc/${p}/cmdline" 2>/dev/null | grep -qF -- "${ENGINE_EXEC_ROOT}/" && printf '%s\n' "${p}"
  done
}

# The pid and all its descendants, children first.
descendants() {
  local c
  for c in $(pgrep -P "$1" || true); do descendants "${c}"; done
  printf '%s\n' "$1"
}

# 1. The containers and the daemon.
if [[ -n "${pid}" ]]; then
  if engine_private_answers; then
    # Networks made since up.sh (kind's, for one); docker0 was recorded then.
    { engine_private_bridges || true; } | { grep -vx docker0 || true; } | engine_record_bridges
    mapfile -t ids < <(docker ps -q)
    if ((${#ids[@]})); then
      log "killing ${#ids[@]} container(s) of the private engine"
      docker kill "${ids[@]}" >/dev/null 2>&1 || true
      deadline=$((SECONDS + 30))
      while [[ -n "$(docker ps -q 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.3; done
    fi
  else
    log "the private dockerd (pid ${pid}) does not answer; stopping it anyway"
  fi
  stop dockerd 60 "${pid}"
fi

# 2. Its containerd, then any shim (and what runs under it) left behind.
mapfile -t ctrd < <(procs_under_exec_root '^(/[^ ]*/)?containerd( |$)')
stop "the private engine's containerd" 30 "${ctrd[@]}"
mapfile -t shims < <(procs_under_exec_root '^(/[^ ]*/)?containerd-shim')
if ((${#shims[@]})); then
  mapfile -t tree < <(for s in "${shims[@]}"; do descendants "${s}"; done)
  stop "leftover containerd shims and their containers" 3 "${tree[@]}"
fi

# 3. Mounts (dockerd unmounts its own when it stops cleanly).
unmounted=0
while read -r mp; do
  [[ -n "${mp}" ]] || continue
  if umount "${mp}" 2>/dev/null || umount -l "${mp}"; then unmounted=$((unmounted + 1)); else log "warning: could not unmount ${mp}"; fi
done < <(our_mounts)
((unmounted == 0)) || log "unmounted ${unmounted} leftover mount(s)"
[[ -z "$(our_mounts)" ]] || die "still mounted: $(our_mounts | tr '\n' ' ')"

foreign="$(engine_foreign_dockerds | tr '\n' ' ')"
[[ -z "${foreign}" ]] || log "another dockerd runs (pid ${foreign}); leaving docker0 and the DOCKER iptables chains alone"

# 4. Bridges: the recorded ones, and br-<id> of every network in the data-root
# (in case the daemon could not be asked).
mapfile -t bridges < <(
  {
    cat "${ENGINE_BRIDGES}" 2>/dev/null || true
    kv="${ENGINE_DATA_ROOT}/network/files/local-kv.db"
    if [[ -f "${kv}" ]]; then
      grep -aoE 'docker/network/v1\.0/network/[0-9a-f]{64}' "${kv}" | sed -E 's|.*/([0-9a-f]{12})[0-9a-f]{52}$|br-\1|' || true
    fi
  } | LC_ALL=C sort -u
)
removed=()
for br in "${bridges[@]}"; do
  [[ -n "${foreign}" && "${br}" == docker0 ]] && continue
  ip -d link show dev "${br}" 2>/dev/null | grep -qw bridge || continue
  ip link delete dev "${br}" && removed+=("${br}")
done
((${#removed[@]} == 0)) || log "removed bridges: ${removed[*]}"

# 5. iptables: in each backend, the rules of the built-in chains that jump to a
# DOCKER chain or name one of our bridges, then the DOCKER chains.
clean_iptables() {
  local ipt=$1 table line chain rule docker_chains
  local -a words
  for table in filter nat; do
    engine_iptables_has_table "${ipt}" "${table}" || continue
    docker_chains=()
    while read -r line; do
      case "${line}" in
        :DOCKER*) docker_chains+=("${line%% *}") ;;
        -A\ *)
          read -r -a words <<<"${line}"
          chain="${words[1]}"
          [[ "${chain}" == DOCKER* ]] && continue
          rule=0
          for ((i = 2; i < ${#words[@]}; i++)); do
            case "${words[i]}" in
              -j | -g) [[ "${words[i + 1]:-}" == DOCKER* ]] && rule=1 ;;
              -i | -o) printf '%s\n' "${bridges[@]}" | grep -qxF -- "${words[i + 1]:-}" && rule=1 ;;
            esac
          done
          if ((rule)); then
            "${ipt}" -t "${table}" -D "${words[@]:1}" || log "warning: ${ipt} -t ${table} could not delete: ${line}"
          fi
          ;;
      esac
    done < <("${ipt}-save" -t "${table}")
    for chain in "${docker_chains[@]}"; do "${ipt}" -t "${table}" -F "${chain#:}" || true; done
    for chain in "${docker_chains[@]}"; do
      "${ipt}" -t "${table}" -X "${chain#:}" || log "warning: ${ipt} -t ${table} could not delete chain ${chain#:}"
    done
    ((${#docker_chains[@]} == 0)) || log "${ipt}: removed ${table} chains ${docker_chains[*]#:}"
  done
}
if [[ -z "${foreign}" ]]; then
  while read -r b; do clean_iptables "${b}"; done < <(engine_iptables_backends)
fi

# 6. The forwarding settings dockerd changed (unless another dockerd runs).
if [[ -z "${foreign}" && -f "${ENGINE_HOST_STATE}" ]]; then
  while read -r key val; do
    case "${key}" in
      ip_forward)
        if [[ "${val}" == 0 && "$(cat /proc/sys/net/ipv4/ip_forward)" == 1 ]]; then
          echo 0 >/proc/sys/net/ipv4/ip_forward && log "restored net.ipv4.ip_forward=0"
        fi
        ;;
      iptables*)
        if command -v "${key}" >/dev/null && [[ "${val}" != DROP && "$(engine_forward_policy "${key}")" == DROP ]]; then
          "${key}" -t filter -P FORWARD "${val}" && log "${key}: restored the FORWARD policy ${val}"
        fi
        ;;
    esac
  done <"${ENGINE_HOST_STATE}"
fi

# 7. State: the exec-root (nothing is mounted there any more), dockerd's
# plugin directory if empty, the pidfile and the record.
rm -rf --one-file-system "${ENGINE_EXEC_ROOT}"
[[ -n "${foreign}" ]] || { rmdir /run/docker/plugins 2>/dev/null && rmdir /run/docker 2>/dev/null; } || true
rm -f "${ENGINE_PIDFILE}" "${ENGINE_SOCK}" "${ENGINE_BRIDGES}" "${ENGINE_HOST_STATE}"
log "private Docker engine stopped (data kept in ${ENGINE_DATA_ROOT})"
