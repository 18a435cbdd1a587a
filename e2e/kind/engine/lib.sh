# The project's container engine: the user's own Docker, or a private dockerd
# that the project starts and stops itself (up.sh, down.sh, status.sh).
# Sourced, never run. Sourcing it chooses the engine and exports DOCKER_HOST,
# DOCKER_BUILDKIT and PAYSTREAM_DOCKER_CLI; scripts then call `docker`, a shell
# function that runs the chosen CLI.
#
# PAYSTREAM_DOCKER chooses:
#   private  the private dockerd, whatever else runs;
#   user     the user's Docker (DOCKER_HOST as the user set it); dies if
#            `docker info` fails there;
#   auto     (default) the user's Docker if `docker info` answers there and it
#            is not the private one, else the private one.
# The private engine keeps everything under $PAYSTREAM_CACHE/docker (images
# persist across clones, as a build cache) except its exec-root, which is
# short because of the length limit of unix socket paths.
# shellcheck shell=bash

ENGINE_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE_REPO_ROOT="$(cd "${ENGINE_LIB_DIR}/../../.." && pwd)"

PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-${HOME}/.cache/paystream}"
PAYSTREAM_DOCKER="${PAYSTREAM_DOCKER:-auto}"

# Where the private engine lives.
ENGINE_DIR="${PAYSTREAM_CACHE}/docker"
ENGINE_DATA_ROOT="${ENGINE_DIR}/data"
ENGINE_PIDFILE="${ENGINE_DIR}/dockerd.pid"
# shellcheck disable=SC2034 # used by the scripts that source this file
ENGINE_LOG="${ENGINE_DIR}/dockerd.log"
ENGINE_SOCK="${ENGINE_DIR}/docker.sock"
# One exec-root per engine directory: /run/paystream-docker for the default
# cache, else suffixed with a hash of the directory.
if [[ -n "${PAYSTREAM_DOCKER_EXEC_ROOT:-}" ]]; then
  ENGINE_EXEC_ROOT="${PAYSTREAM_DOCKER_EXEC_ROOT}"
elif [[ "${ENGINE_DIR}" == "${HOME}/.cache/paystream/docker" ]]; then
  ENGINE_EXEC_ROOT=/run/paystream-docker
else
  ENGINE_EXEC_ROOT="/run/paystream-docker-$(printf '%s' "${ENGINE_DIR}" | sha256sum | cut -c1-8)"
fi
# The runtime wrapper dockerd runs instead of runc (a copy of runc-wrapper, so
# that the daemon, shared by every clone, never depends on one clone's files).
ENGINE_RUNTIME_NAME="paystream-runc"
# shellcheck disable=SC2034 # used by the scripts that source this file
ENGINE_RUNTIME="${ENGINE_DIR}/bin/${ENGINE_RUNTIME_NAME}"
# Present while the private engine may have left bridges, rules or mounts
# behind: one bridge name a line, the bridges the private dockerd made.
ENGINE_BRIDGES="${ENGINE_DIR}/bridges"
# The host's forwarding settings before the private dockerd first changed them
# (ip_forward, each iptables backend's FORWARD policy), for down.sh to restore.
# shellcheck disable=SC2034 # used by the scripts that source this file
ENGINE_HOST_STATE="${ENGINE_DIR}/host-before"
# A unix socket path must fit in 108 bytes; fall back to the exec-root.
if ((${#ENGINE_SOCK} > 100)); then ENGINE_SOCK="${ENGINE_EXEC_ROOT}/docker.sock"; fi

# Debian's 20.10 CLI speaks BuildKit without the buildx plugin; the docker 28
# CLI refuses DOCKER_BUILDKIT=1 without it.
ENGINE_PRIVATE_CLI=/usr/bin/docker
# A clean PATH for the daemon and its children (runc, the wrapper's python3,
# iptables): no version-manager shims.
# shellcheck disable=SC2034 # used by the scripts that source this file
ENGINE_DAEMON_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

engine_log() { printf '[engine] %s\n' "$*" >&2; }
engine_die() { printf '[engine] ERROR: %s\n' "$*" >&2; exit 1; }
declare -F log >/dev/null || log() { engine_log "$@"; }
declare -F die >/dev/null || die() { engine_die "$@"; }

# The user's DOCKER_HOST as it was before any of our scripts changed it.
export PAYSTREAM_USER_DOCKER_HOST="${PAYSTREAM_USER_DOCKER_HOST-${DOCKER_HOST-}}"

# The user's docker CLI: the one on PATH, else Debian's.
engine_user_cli() {
  local cli
  cli="$(type -P docker || true)"
  printf '%s' "${cli:-${ENGINE_PRIVATE_CLI}}"
}

# Runs the user's CLI against the user's DOCKER_HOST (unset if the user had none).
engine_user_docker() {
  local cli
  cli="$(engine_user_cli)"
  [[ -x "${cli}" ]] || return 127
  if [[ -n "${PAYSTREAM_USER_DOCKER_HOST}" ]]; then
    DOCKER_HOST="${PAYSTREAM_USER_DOCKER_HOST}" timeout 20 "${cli}" "$@"
  else
    env -u DOCKER_HOST timeout 20 "${cli}" "$@"
  fi
}

# True when the user's Docker answers and is not the private engine.
engine_user_usable() {
  local root
  root="$(engine_user_docker info --format '{{.DockerRootDir}}' 2>/dev/null)" || return 1
  [[ -n "${root}" && "${root}" != "${ENGINE_DATA_ROOT}" ]]
}

# Resolve PAYSTREAM_DOCKER into PAYSTREAM_ENGINE (private|user). A choice made
# by a parent script (exported) is kept in auto mode, so that every script of a
# run talks to the same engine.
engine_select() {
  case "${PAYSTREAM_DOCKER}" in
    private) PAYSTREAM_ENGINE=private ;;
    user)
      engine_user_usable || engine_die "PAYSTREAM_DOCKER=user, but the user's Docker does not answer" \
        "(\`docker info\` with DOCKER_HOST=${PAYSTREAM_USER_DOCKER_HOST:-<unset>} failed, or it is the private engine);" \
        "start your Docker, or use PAYSTREAM_DOCKER=private"
      PAYSTREAM_ENGINE=user
      ;;
    auto)
      if [[ "${PAYSTREAM_ENGINE:-}" != private && "${PAYSTREAM_ENGINE:-}" != user ]]; then
        if engine_user_usable; then PAYSTREAM_ENGINE=user; else PAYSTREAM_ENGINE=private; fi
      fi
      ;;
    *) engine_die "PAYSTREAM_DOCKER must be private, user or auto (got '${PAYSTREAM_DOCKER}')" ;;
  esac
  export PAYSTREAM_ENGINE PAYSTREAM_DOCKER

  if [[ "${PAYSTREAM_ENGINE}" == private ]]; then
    PAYSTREAM_DOCKER_CLI="${ENGINE_PRIVATE_CLI}"
    [[ -x "${PAYSTREAM_DOCKER_CLI}" ]] || PAYSTREAM_DOCKER_CLI="$(engine_user_cli)"
    export DOCKER_HOST="unix://${ENGINE_SOCK}"
    export DOCKER_BUILDKIT=1
  else
    PAYSTREAM_DOCKER_CLI="$(engine_user_cli)"
    if [[ -n "${PAYSTREAM_USER_DOCKER_HOST}" ]]; then
      export DOCKER_HOST="${PAYSTREAM_USER_DOCKER_HOST}"
    else
      unset DOCKER_HOST
    fi
    # BuildKit: through buildx if the CLI has it, built in below CLI 23.
    local major
    major="$("${PAYSTREAM_DOCKER_CLI}" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)"
    if "${PAYSTREAM_DOCKER_CLI}" buildx version >/dev/null 2>&1 || [[ "${major}" =~ ^[0-9]+$ && "${major}" -lt 23 ]]; then
      export DOCKER_BUILDKIT=1
    fi
  fi
  export PAYSTREAM_DOCKER_CLI
}

docker() { "${PAYSTREAM_DOCKER_CLI}" "$@"; }

# Installs the private engine's packages if missing (quiet, idempotent), with
# the project's apt_install; run in a subshell so that stack/lib.sh's log, die
# and variables stay out of the caller (it waits for another apt run's lock).
engine_ensure_installed() {
  local pkgs=(docker.io containerd runc iptables iproute2 procps python3 util-linux)
  local p missing=0
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed' || missing=1
  done
  ((missing)) || return 0
  (
    # shellcheck source=stack/lib.sh
    source "${ENGINE_REPO_ROOT}/stack/lib.sh"
    apt_install "${pkgs[@]}"
  ) || engine_die "could not install ${pkgs[*]}"
}

# The pid of the private dockerd if it runs (its pidfile names a live dockerd
# started with our data-root), else nothing and false.
engine_private_pid() {
  local pid
  pid="$(cat "${ENGINE_PIDFILE}" 2>/dev/null || true)"
  if [[ "${pid}" =~ ^[0-9]+$ ]] && engine_is_private_dockerd "${pid}"; then
    printf '%s' "${pid}"
    return 0
  fi
  # No pidfile (removed by hand?): a dockerd running with our data-root.
  for pid in $(pgrep -x dockerd || true); do
    if engine_is_private_dockerd "${pid}"; then
      printf '%s' "${pid}"
      return 0
    fi
  done
  return 1
}

# True when PID is a live dockerd started with the private data-root.
engine_is_private_dockerd() {
  kill -0 "$1" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--data-root ${ENGINE_DATA_ROOT} "
}

# True when the private engine's socket answers.
engine_private_answers() {
  DOCKER_HOST="unix://${ENGINE_SOCK}" timeout 20 "${ENGINE_PRIVATE_CLI}" info >/dev/null 2>&1
}

# The bridges of the private engine's networks (docker0 for "bridge",
# br-<id> or the named bridge for the others), one a line.
engine_private_bridges() {
  local ids
  ids="$(DOCKER_HOST="unix://${ENGINE_SOCK}" timeout 20 "${ENGINE_PRIVATE_CLI}" network ls -q --no-trunc --filter driver=bridge)" || return 1
  [[ -n "${ids}" ]] || return 0
  # shellcheck disable=SC2086 # ids are hex words
  DOCKER_HOST="unix://${ENGINE_SOCK}" timeout 20 "${ENGINE_PRIVATE_CLI}" network inspect ${ids} \
    --format '{{with index .Options "com.docker.network.bridge.name"}}{{.}}{{else}}br-{{printf "%.12s" $.Id}}{{end}}'
}

# Adds bridge names (stdin) to the record of the private engine's bridges.
engine_record_bridges() {
  mkdir -p "${ENGINE_DIR}"
  { cat "${ENGINE_BRIDGES}" 2>/dev/null || true; cat; } | { grep -E '^[A-Za-z0-9_.-]+$' || true; } | LC_ALL=C sort -u >"${ENGINE_BRIDGES}.tmp"
  mv "${ENGINE_BRIDGES}.tmp" "${ENGINE_BRIDGES}"
}

# Live dockerd processes other than the private one (a user's engine).
engine_foreign_dockerds() {
  local own pid
  own="$(engine_private_pid || true)"
  for pid in $(pgrep -x dockerd || true); do
    [[ "${pid}" == "${own}" ]] || engine_is_private_dockerd "${pid}" || printf '%s\n' "${pid}"
  done
}

# The iptables backends to look at: iptables-nft and iptables-legacy when
# installed, else plain iptables.
engine_iptables_backends() {
  local b found=0
  for b in iptables-nft iptables-legacy; do
    command -v "${b}" >/dev/null 2>&1 && { printf '%s\n' "${b}"; found=1; }
  done
  ((found)) || printf 'iptables\n'
}

# True when BACKEND has TABLE (never creates a legacy table by reading it).
engine_iptables_has_table() {
  if [[ "$1" == iptables-legacy ]]; then
    grep -qx "$2" /proc/net/ip_tables_names 2>/dev/null
  else
    "$1-save" -t "$2" 2>/dev/null | grep -q "^\*$2"
  fi
}

# The FORWARD policy of BACKEND's filter table (ACCEPT without the table).
engine_forward_policy() {
  local p=""
  if engine_iptables_has_table "$1" filter; then
    p="$("$1-save" -t filter 2>/dev/null | sed -n 's/^:FORWARD \([A-Z]*\) .*/\1/p')"
  fi
  printf '%s' "${p:-ACCEPT}"
}

engine_select
