#!/usr/bin/env bash
# A kind cluster with real pods, made on this machine without any registry
# (`make kind-up`):
#   1. the container engine: the user's Docker or our private dockerd
#      (e2e/kind/engine/, which says how it is chosen);
#   2. the node image, assembled offline and cached by its inputs
#      (e2e/kind/node/build.sh);
#   3. the cluster from kind-config.yaml, with that image passed by --image
#      (the file stays the user's: it names the upstream image by digest);
#   4. the local stack exposed at the kind network's gateway
#      (e2e/kind/hoststack.sh: the pods' MariaDB, Kafka and Redis);
#   5. metrics-server from the binary the local control plane builds, so
#      HPAs get measured CPU; kwok on this machine for the shared suite's
#      fake nodes (tainted, so only pods that ask land there).
# Idempotent: a second run reuses the cluster. The kubeconfig is
# var/kind/kubeconfig ($PAYSTREAM_VAR/kind).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/controlplane/lib.sh
source "${here}/../controlplane/lib.sh"
# shellcheck source=e2e/kind/lib.sh
source "${here}/lib.sh"

stage "container engine" bash "${here}/engine/up.sh"
stage "node image" bash "${here}/node/build.sh"
image="$(node_image)"
KIND="$(kind_bin)"

mkdir -p "${KIND_DIR}"
# A cluster whose node stopped (a reboot, a killed engine) cannot be revived
# (its address may change), and one on an older node image would not test
# the current one: either is made again.
if "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  "${KIND}" get kubeconfig --name "${KIND_CLUSTER_NAME}" >"${KIND_KUBECONFIG}" 2>/dev/null || true
  if [[ "$(docker inspect -f '{{.State.Running}} {{.Config.Image}}' "${KIND_NODE}" 2>/dev/null)" == "true ${image}" ]] &&
    kk get --raw /readyz >/dev/null 2>&1; then
    log "kind cluster ${KIND_CLUSTER_NAME} exists; reusing it"
  else
    log "kind cluster ${KIND_CLUSTER_NAME} exists but its node is stopped, does not answer or runs another node image; making it again"
    "${KIND}" delete cluster --name "${KIND_CLUSTER_NAME}" --kubeconfig "${KIND_KUBECONFIG}"
  fi
fi
if ! "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  stage "cluster" "${KIND}" create cluster --name "${KIND_CLUSTER_NAME}" \
    --config "${REPO_ROOT}/kind-config.yaml" --image "${image}" \
    --kubeconfig "${KIND_KUBECONFIG}" --wait 180s
fi
chmod 600 "${KIND_KUBECONFIG}"

stage "stack at the gateway" bash "${here}/hoststack.sh" up "$(kind_gateway)"

stage "metrics-server" apply_metrics_server
stage "kwok" start_kwok

log "kind cluster ${KIND_CLUSTER_NAME} is up: node image ${image}"
echo "export KUBECONFIG=${KIND_KUBECONFIG}; kubectl get nodes"
