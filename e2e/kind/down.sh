#!/usr/bin/env bash
# Takes down what e2e/kind/up.sh made (`make kind-down`, part of `make down`):
# the kind cluster and its docker network, kwok, the stack's forwarders and
# Kafka's listener on the gateway, and our private dockerd with its bridges,
# iptables rules and mounts (a user's own Docker is left running). Leaves no
# container, bridge, rule, mount or process of ours. Idempotent; cheap when
# nothing runs. The caches (node image, images, engine data) stay.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/controlplane/lib.sh
source "${here}/../controlplane/lib.sh"
# shellcheck source=e2e/kind/lib.sh
source "${here}/lib.sh"

stop_kwok
bash "${here}/hoststack.sh" down

if docker info >/dev/null 2>&1; then
  if [[ -n "${KIND}" && -x "${KIND}" ]] && "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
    log "deleting kind cluster ${KIND_CLUSTER_NAME}"
    "${KIND}" delete cluster --name "${KIND_CLUSTER_NAME}" --kubeconfig "${KIND_KUBECONFIG}"
  fi
  # Without the kind binary of the current pins (they changed since the
  # cluster was made), its node containers go by kind's label.
  nodes="$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=${KIND_CLUSTER_NAME}")"
  if [[ -n "${nodes}" ]]; then
    log "removing the node containers of kind cluster ${KIND_CLUSTER_NAME}"
    # shellcheck disable=SC2086 # container ids
    docker rm -f -v ${nodes} >/dev/null
  fi
  # kind leaves its network behind; drop it when nothing else uses it.
  if docker network inspect kind >/dev/null 2>&1 &&
    [[ -z "$(docker network inspect kind -f '{{range .Containers}}{{.Name}} {{end}}')" ]]; then
    docker network rm kind >/dev/null
  fi
fi
rm -f "${KIND_KUBECONFIG}"
bash "${here}/engine/down.sh"
