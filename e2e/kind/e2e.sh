#!/usr/bin/env bash
# The kind end-to-end run (`make kind-e2e`), for machines with Docker:
#   1. create the kind cluster (kind-config.yaml, via e2e/kind/up.sh);
#   2. build the four images (Dockerfile targets) and `kind load` them;
#   3. deploy MariaDB, Kafka and Redis from e2e/kind/manifests/;
#   4. install the chart (charts/paystream-operator) and apply a PaymentPipeline;
#   5. run the e2e suite (the same test files as the local control plane)
#      plus the real data-flow test (a row in MariaDB served by the API).
# Needs: docker, kind >= 0.29, kubectl, the Rust toolchain and the local stack
# (the operator test runs against it, as on the local path). See README.md.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../controlplane/lib.sh"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-paystream}"
export KUBECONFIG="${PAYSTREAM_VAR}/kind/kubeconfig"
NS=paystream               # MariaDB, Kafka, Redis and the pipeline
OPERATOR_NS=paystream-system
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "${REPO_ROOT}/Cargo.toml" | head -n1)"
[[ -n "${VERSION}" ]] || die "no workspace version in Cargo.toml"
k() { kubectl "$@"; }

# 1. the cluster (idempotent), with KWOK nodes and metrics-server like the
#    local control plane, so the shared tests find what they expect.
bash "${REPO_ROOT}/e2e/kind/up.sh"

# 2. images: the names and tag the operator defaults to (names.rs), so the
#    workloads need no image override.
for target in operator producer consumer api; do
  image="ghcr.io/paystream/paystream-${target}:${VERSION}"
  log "building ${image}"
  docker build --target "${target}" --tag "${image}" \
    --build-arg "VERSION=${VERSION}" \
    --build-arg "REVISION=$(git -C "${REPO_ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${REPO_ROOT}"
  kind load docker-image --name "${KIND_CLUSTER_NAME}" "${image}"
done

# 3. the stack, in namespace paystream; the schema from the same migrations
#    as the local stack.
k create namespace "${NS}" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "${NS}" create configmap mariadb-migrations \
  --from-file "${REPO_ROOT}/stack/mariadb/migrations" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "${NS}" apply -f "${REPO_ROOT}/e2e/kind/manifests/mariadb.yaml" \
  -f "${REPO_ROOT}/e2e/kind/manifests/kafka.yaml" -f "${REPO_ROOT}/e2e/kind/manifests/redis.yaml"
k -n "${NS}" rollout status statefulset/mariadb --timeout 300s
k -n "${NS}" rollout status statefulset/kafka --timeout 300s
k -n "${NS}" rollout status deployment/redis --timeout 300s

# 4. the chart (the real operator, on the real node, watching only
#    namespace paystream so it never touches the test namespaces, where the
#    operator test runs its own operator process), then the pipeline.
helm="$(bash "${REPO_ROOT}/charts/install-helm.sh")"
"${helm}" upgrade --install paystream-operator "${REPO_ROOT}/charts/paystream-operator" \
  --namespace "${OPERATOR_NS}" --create-namespace \
  --set operator.watchNamespace="${NS}" \
  --wait --timeout 300s
k -n "${NS}" apply -f "${REPO_ROOT}/e2e/kind/manifests/pipeline.yaml"
# The API verifies HS256 bearer tokens. The operator does not pass a JWT
# secret to the API yet, so add it to the Deployment the operator created (an
# env entry the operator's field manager does not own, so it is left alone).
PAYSTREAM_E2E_JWT_SECRET="$(openssl rand -hex 32)"
export PAYSTREAM_E2E_JWT_SECRET
k -n "${NS}" create secret generic api-jwt \
  --from-literal PAYSTREAM_JWT_SECRET="${PAYSTREAM_E2E_JWT_SECRET}" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "${NS}" wait deployment/demo-api --for create --timeout 180s
k -n "${NS}" set env deployment/demo-api --from secret/api-jwt
k -n "${NS}" wait paymentpipeline/demo --for condition=Ready --timeout 300s

# 5. the shared suite, then the data flow through the real pods.
cd "${REPO_ROOT}"
HELM="${helm}" KUBECTL="$(command -v kubectl)" \
  cargo test -p paystream-e2e --locked -- --test-threads=1
HELM="${helm}" KUBECTL="$(command -v kubectl)" PAYSTREAM_E2E_REAL_PODS="${NS}" \
  cargo test -p paystream-e2e --locked --test dataflow -- --test-threads=1 --nocapture
log "kind e2e passed; the cluster is left up (make kind-down deletes it)"
