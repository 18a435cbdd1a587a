#!/usr/bin/env bash
# Start a kind cluster for the e2e suite (needs Docker, kind and kubectl), set
# up like the local control plane: metrics-server, KWOK running in the cluster
# with its default stages and annotation-driven resource usage, and the same
# fake nodes (tainted here, since kind also has a real node). Writes the
# kubeconfig to var/kind/kubeconfig ($PAYSTREAM_VAR/kind). Idempotent: an
# existing cluster is reused and the add-ons are re-applied.
#
# The add-ons come from their projects' release manifests, at the versions
# pinned in e2e/controlplane/versions.env, so this needs internet access.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../controlplane/lib.sh"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-paystream}"
KIND_DIR="${PAYSTREAM_VAR}/kind"
kubeconfig="${KIND_DIR}/kubeconfig"

for tool in docker kind kubectl; do
  command -v "${tool}" >/dev/null || die "${tool} is not installed; the kind path needs Docker, kind and kubectl (without Docker: make cluster-up)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed); without Docker use: make cluster-up"

mkdir -p "${KIND_DIR}"
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  log "kind cluster ${KIND_CLUSTER_NAME} already exists; reusing it"
  kind get kubeconfig --name "${KIND_CLUSTER_NAME}" >"${kubeconfig}"
else
  log "creating kind cluster ${KIND_CLUSTER_NAME} from kind-config.yaml"
  kind create cluster --name "${KIND_CLUSTER_NAME}" --config "${REPO_ROOT}/kind-config.yaml" \
    --kubeconfig "${kubeconfig}" --wait 180s
fi
chmod 600 "${kubeconfig}"
k() { kubectl --kubeconfig "${kubeconfig}" "$@"; }

# metrics-server; kind's kubelets serve self-signed certificates, hence the
# insecure kubelet TLS (the local control plane verifies them instead).
log "installing metrics-server ${METRICS_SERVER_VERSION}"
k apply -f "https://github.com/kubernetes-sigs/metrics-server/releases/download/${METRICS_SERVER_VERSION}/components.yaml" >/dev/null
if ! k -n kube-system get deployment metrics-server -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -q -- --kubelet-insecure-tls; then
  k -n kube-system patch deployment metrics-server --type json \
    -p '[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--kubelet-insecure-tls"}]' >/dev/null
fi

# KWOK in the cluster, with its default fast stages and the
# annotation-driven resource usage (kwok.x-k8s.io/usage-cpu).
log "installing kwok ${KWOK_VERSION}"
kwok_release="https://github.com/kubernetes-sigs/kwok/releases/download/${KWOK_VERSION}"
k apply -f "${kwok_release}/kwok.yaml" >/dev/null
# kwok's default configuration syncs pods with a WatchList stream, which
# Kubernetes 1.33 serves only behind a feature gate that is off by default
# (the local control plane keeps the default too): use a plain list instead.
if k -n kube-system get configmap kwok -o json | grep -q 'enablePodsOnNodeSyncStreamWatch: true'; then
  k -n kube-system get configmap kwok -o json |
    sed 's/enablePodsOnNodeSyncStreamWatch: true/enablePodsOnNodeSyncStreamWatch: false/' |
    k replace -f - >/dev/null
  k -n kube-system rollout restart deployment/kwok-controller >/dev/null
fi
k apply -f "${kwok_release}/stage-fast.yaml" >/dev/null
k apply -f "${kwok_release}/metrics-usage.yaml" >/dev/null

k -n kube-system rollout status deployment/kwok-controller --timeout 180s >/dev/null
k -n kube-system rollout status deployment/metrics-server --timeout 180s >/dev/null

kwok_nodes_manifest 1 | k apply -f - >/dev/null
k wait --for condition=Ready --timeout 120s node -l type=kwok >/dev/null
k wait --for condition=Available --timeout 180s apiservice/v1beta1.metrics.k8s.io >/dev/null

log "kind cluster ${KIND_CLUSTER_NAME} is up with ${KWOK_NODES} kwok nodes and metrics-server"
echo "export KUBECONFIG=${kubeconfig}; kubectl get nodes"
