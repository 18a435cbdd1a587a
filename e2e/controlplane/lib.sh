# Shared settings and helpers of the local control plane scripts
# (build.sh, up.sh, down.sh, status.sh). Sourced, never run.
# shellcheck shell=bash

CP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${CP_DIR}/../.." && pwd)"
# shellcheck source=e2e/controlplane/versions.env
source "${CP_DIR}/versions.env"

# Build cache, outside the clone.
PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-${HOME}/.cache/paystream}"
# Runtime state (certs, etcd data, logs, kubeconfig, pids), git-ignored:
# $PAYSTREAM_VAR/cluster, that is var/cluster in the clone.
PAYSTREAM_VAR="${PAYSTREAM_VAR:-${REPO_ROOT}/var}"
CLUSTER_DIR="${CLUSTER_DIR:-${PAYSTREAM_VAR}/cluster}"
[[ "${CLUSTER_DIR}" == /* ]] || CLUSTER_DIR="${REPO_ROOT}/${CLUSTER_DIR}"

# Ports, all bound to 127.0.0.1. Override any of them through the environment.
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${APISERVER_PORT:-16443}"
CONTROLLER_MANAGER_PORT="${CONTROLLER_MANAGER_PORT:-16444}"
SCHEDULER_PORT="${SCHEDULER_PORT:-16445}"
KWOK_PORT="${KWOK_PORT:-16446}"
METRICS_SERVER_PORT="${METRICS_SERVER_PORT:-16447}"
# Number of fake (KWOK) nodes.
KWOK_NODES="${KWOK_NODES:-3}"

# Components in start order; down.sh stops them in reverse.
# shellcheck disable=SC2034 # used by the scripts that source this file
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok metrics-server)

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] ERROR: %s\n' "$*" >&2; exit 1; }

# The cache key of a build: the pinned versions, every input of the three Go
# modules and the Go toolchain. Any change gives a new key, hence a rebuild.
build_key() {
  (
    cd "${CP_DIR}" || exit 1
    {
      cat versions.env
      go env GOVERSION GOOS GOARCH
      find go.mod go.sum cmd tools build.sh -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name 'build.sh' \) -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-12
  )
}

# Where the binaries of the current pins live.
bin_dir() {
  printf '%s/k8s/%s/%s/bin' "${PAYSTREAM_CACHE}" "${KUBE_VERSION}" "$(build_key)"
}

# Minor version as a number: v1.33.13 -> 33.
kube_minor() { local v="${KUBE_VERSION#v1.}"; printf '%s' "${v%%.*}"; }

# A kubectl within one minor version of the server: a kubectl.1.N next to the
# kubectl on PATH (as the Google Cloud SDK ships them), else the one on PATH if
# its own minor is close enough. Prints the path, or nothing.
find_kubectl() {
  local want base cand minor
  want="$(kube_minor)"
  if [[ -n "${KUBECTL:-}" && -x "${KUBECTL}" ]]; then printf '%s' "${KUBECTL}"; return; fi
  if command -v kubectl >/dev/null 2>&1; then
    base="$(dirname "$(readlink -f "$(command -v kubectl)")")"
    for minor in "${want}" "$((want - 1))" "$((want + 1))"; do
      cand="${base}/kubectl.1.${minor}"
      if [[ -x "${cand}" ]]; then printf '%s' "${cand}"; return; fi
    done
    cand="$(command -v kubectl)"
    minor="$("${cand}" version --client -o json 2>/dev/null | sed -n 's/.*"minor": "\([0-9]*\).*/\1/p' | head -n1)"
    if [[ -n "${minor}" ]] && ((minor >= want - 1 && minor <= want + 1)); then
      printf '%s' "${cand}"; return
    fi
  fi
}

pid_file() { printf '%s/pids/%s.pid' "${CLUSTER_DIR}" "$1"; }

# Is the component's recorded process alive (and still the one we started)?
component_running() {
  local pf pid
  pf="$(pid_file "$1")"
  [[ -f "${pf}" ]] || return 1
  pid="$(cat "${pf}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null &&
    tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline" | grep -q -- "${CLUSTER_DIR}"
}

# True while the process started for component $1 is alive. Unlike
# component_running it does not look at the command line: right after the
# fork, before exec, the child still shows the parent's command line.
component_alive() {
  local pf pid
  pf="$(pid_file "$1")"
  [[ -f "${pf}" ]] || return 1
  pid="$(cat "${pf}")"
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null
}

# Poll a command until it succeeds or the deadline (seconds) passes.
wait_until() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    sleep 0.5
  done
}

# The fake nodes, as one YAML stream on stdout: KWOK_NODES nodes named
# kwok-node-<i>, labelled type=kwok (test pods select that) and annotated for
# kwok (which manages them) and metrics-server (where their resource metrics
# are). TAINT=1 adds kwok's NoSchedule taint, for clusters that also have real
# nodes (kind), so that only pods tolerating it land on the fake ones.
kwok_nodes_manifest() {
  local taint="${1:-0}" i
  for ((i = 0; i < KWOK_NODES; i++)); do
    cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-${i}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/kwok-node-${i}/metrics/resource
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-${i}
    node-role.kubernetes.io/agent: ""
    type: kwok
NODE
    if ((taint)); then
      cat <<NODE
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
NODE
    fi
    cat <<NODE
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110"}
  capacity: {cpu: "8", memory: 32Gi, pods: "110"}
NODE
  done
}
