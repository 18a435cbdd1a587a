# Shared settings and steps of the kind scripts (up.sh, down.sh, e2e.sh,
# status.sh). Sourced after e2e/controlplane/lib.sh; never run.
# shellcheck shell=bash

KIND_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/kind/engine/lib.sh
source "${KIND_SCRIPTS}/engine/lib.sh"
# shellcheck source=e2e/kind/node/lib.sh
source "${KIND_SCRIPTS}/node/lib.sh"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-paystream}"
KIND_DIR="${PAYSTREAM_VAR}/kind"
KIND_KUBECONFIG="${KIND_DIR}/kubeconfig"
# The node's container, which is also the Kubernetes node's name.
KIND_NODE="${KIND_CLUSTER_NAME}-control-plane"
# Set again by up.sh once the node build has made it.
KIND="$(kind_bin 2>/dev/null || true)"

log() { printf '[kind] %s\n' "$*" >&2; }
die() { printf '[kind] ERROR: %s\n' "$*" >&2; exit 1; }

# stage NAME COMMAND...: runs COMMAND and says how long it took, so a CI
# log shows where the minutes go.
stage() {
  local name="$1" start=${SECONDS}
  shift
  log "stage ${name}: start"
  "$@"
  log "stage ${name}: $((SECONDS - start)) s"
}

kk() { "$(find_kubectl)" --kubeconfig "${KIND_KUBECONFIG}" "$@"; }

# The IPv4 gateway of the docker network kind put its node on: the host's
# address on that bridge, where the pods find the local stack.
kind_gateway() {
  local gw
  gw="$(docker network inspect kind \
    -f '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}' 2>/dev/null |
    tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n1)"
  [[ -n "${gw}" ]] || die "the docker network 'kind' has no IPv4 gateway"
  printf '%s' "${gw}"
}

# metrics-server in the cluster, from the image the node image carries; it
# reads the real kubelet's figures (the HPA's CPU). Waits for the API.
apply_metrics_server() {
  kk apply --server-side -f "${KIND_SCRIPTS}/node/manifests/metrics-server.yaml" >/dev/null
  kk -n kube-system rollout status deployment/metrics-server --timeout 180s >/dev/null
  local deadline=$((SECONDS + 180))
  until kk get --raw /apis/metrics.k8s.io/v1beta1/nodes 2>/dev/null | grep -q "${KIND_NODE}"; do
    ((SECONDS < deadline)) || die "metrics-server gives no node metrics after 180 s (kubectl -n kube-system logs deploy/metrics-server)"
    sleep 2
  done
}

# kwok, on this machine, plays the fake nodes the shared suite places its
# test pods on (as on the local control plane), with the manifests the local
# control plane's build keeps. Its nodes carry kwok's NoSchedule taint, so
# the pipeline's real pods never land there.
KWOK_PID="${KIND_DIR}/kwok.pid"
start_kwok() {
  local bin manifests
  bin="$(bin_dir)"
  [[ -x "${bin}/kwok" ]] || bash "${CP_DIR}/build.sh"
  manifests="${bin}/kwok-manifests"
  if [[ -f "${KWOK_PID}" ]] && kill -0 "$(cat "${KWOK_PID}")" 2>/dev/null; then
    log "kwok already runs (pid $(cat "${KWOK_PID}"))"
  else
    kk apply --server-side -f "${manifests}/crds.yaml" >/dev/null
    {
      cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  enableCRDs: [ResourceUsage, ClusterResourceUsage]
  nodeLeaseParallelism: 2
  nodePlayStageParallelism: 2
  podPlayStageParallelism: 2
  podsOnNodeSyncParallelism: 2
  enablePodsOnNodeSyncStreamWatch: false
  cidr: 10.245.0.0/16
EOF
      for f in "${manifests}"/stages/*.yaml; do
        printf -- '---\n'
        cat "${f}"
      done
    } >"${KIND_DIR}/kwok.yaml"
    setsid nohup "${bin}/kwok" --config "${KIND_DIR}/kwok.yaml" --kubeconfig "${KIND_KUBECONFIG}" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
      >>"${KIND_DIR}/kwok.log" 2>&1 </dev/null &
    echo $! >"${KWOK_PID}"
  fi
  kwok_nodes_manifest 1 | kk apply -f - >/dev/null
  kk wait --for condition=Ready --timeout 120s node -l type=kwok >/dev/null ||
    die "the kwok nodes did not turn Ready; see ${KIND_DIR}/kwok.log"
}

stop_kwok() {
  [[ -f "${KWOK_PID}" ]] || return 0
  local pid
  pid="$(cat "${KWOK_PID}")"
  if kill -0 "${pid}" 2>/dev/null && tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "${KIND_DIR}/kwok.yaml"; then
    kill "${pid}" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -9 "${pid}" 2>/dev/null || true
  fi
  rm -f "${KWOK_PID}"
}

# The namespace of the operator the chart installs.
OPERATOR_NS=paystream-system

# The project's four images, built here (e2e/kind/images.sh, cached by their
# inputs), tagged `<version>-<hash of the four image ids>` and loaded into the
# node. The tag changes with any binary, so a cluster that is reused gets its
# operator and workloads rolled to the new images (the chart and the operator
# are given this tag); it is kept in var/kind/image-tag.
IMAGE_TAG_FILE="${KIND_DIR}/image-tag"
load_images() {
  local refs ref version tag
  refs="$(bash "${KIND_SCRIPTS}/images.sh")"
  version="$(sed -n 's/^version = "\(.*\)"/\1/p' "${REPO_ROOT}/Cargo.toml" | head -n1)"
  [[ -n "${version}" ]] || die "no workspace version in Cargo.toml"
  # shellcheck disable=SC2086 # image refs
  tag="${version}-$(docker image inspect -f '{{.Id}}' ${refs} | sha256sum | cut -c1-12)"
  for ref in ${refs}; do
    docker tag "${ref}" "${ref%:*}:${tag}"
    "${KIND}" load docker-image --name "${KIND_CLUSTER_NAME}" "${ref%:*}:${tag}" >/dev/null
    log "loaded ${ref%:*}:${tag}"
  done
  # Earlier builds' tags of these repositories are dead weight in the engine.
  for ref in ${refs}; do
    docker images --format '{{.Repository}}:{{.Tag}}' "${ref%:*}" |
      grep -E ":${version}-[0-9a-f]{12}$" | grep -vx "${ref%:*}:${tag}" |
      xargs -r docker rmi >/dev/null 2>&1 || true
  done
  mkdir -p "${KIND_DIR}"
  echo "${tag}" >"${IMAGE_TAG_FILE}"
}

# install_operator WATCH: the chart installs the operator from the loaded
# images, watching namespace WATCH ("" for every namespace). Idempotent.
install_operator() {
  local helm tag
  [[ -s "${IMAGE_TAG_FILE}" ]] || die "no images loaded yet (load_images)"
  tag="$(cat "${IMAGE_TAG_FILE}")"
  helm="$(bash "${REPO_ROOT}/charts/install-helm.sh")"
  "${helm}" --kubeconfig "${KIND_KUBECONFIG}" upgrade --install paystream-operator \
    "${REPO_ROOT}/charts/paystream-operator" \
    --namespace "${OPERATOR_NS}" --create-namespace \
    --set operator.watchNamespace="$1" \
    --set image.tag="${tag}" \
    --set operator.workloadImageTag="${tag}" \
    --wait --timeout 300s >/dev/null
}

# pipeline_manifest JWT_SECRET: examples/paymentpipeline.yaml adapted to this
# cluster: the stack at the gateway, no KWOK placement, an API that scales 1
# to 3 on 50 % CPU and back 30 s after the load, the given JWT secret.
pipeline_manifest() {
  local gw secret
  gw="$(kind_gateway)"
  secret="$1"
  sed -e "s|host: 127.0.0.1|host: ${gw}|" \
    -e "s|bootstrapServers: 127.0.0.1:19092|bootstrapServers: ${gw}:${PAYSTREAM_KAFKA_KIND_PORT:-19094}|" \
    -e "s|\"127.0.0.1:16379\"|\"${gw}:16379\"|" \
    -e "s|secret: local-example-jwt-secret-0123456789abcdef|secret: ${secret}|" \
    -e '/^  placement:/,$d' \
    "${REPO_ROOT}/examples/paymentpipeline.yaml" |
    awk '
      /^  api:/ { in_api = 1 }
      /^  [a-z]/ && !/^  api:/ { in_api = 0 }
      in_api && /minReplicas:/ { sub(/minReplicas: [0-9]+/, "minReplicas: 1") }
      in_api && /maxReplicas:/ { sub(/maxReplicas: [0-9]+/, "maxReplicas: 3") }
      in_api && /targetCpuUtilization:/ {
        sub(/targetCpuUtilization: [0-9]+/, "targetCpuUtilization: 50")
        print
        print "      scaleDownStabilizationSeconds: 30"
        next
      }
      { print }'
}

