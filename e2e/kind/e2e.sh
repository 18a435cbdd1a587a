#!/usr/bin/env bash
# The kind end-to-end run on real pods (`make kind-e2e`), offline:
#   1. the cluster (e2e/kind/up.sh: engine, node image, kind, the stack at
#      the gateway, metrics-server, kwok);
#   2. the four images built here (e2e/kind/images.sh) and loaded into the node;
#   3. the chart installs the operator from its image, watching namespace
#      paystream; the PaymentPipeline of examples/ is applied there, adapted
#      by this script (the stack at the gateway, no KWOK placement, an API
#      that scales 1 to 3 on 50 % CPU and back after 30 s, a fresh JWT secret);
#   4. the shared e2e suite against this cluster (the emulated-CPU HPA test
#      is left to the local control plane: here the HPA test is real);
#   5. the real-pod suite (e2e/tests/tests/realpods.rs).
# Every stage prints its time. The cluster is left up (make kind-down).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/controlplane/lib.sh
source "${here}/../controlplane/lib.sh"
# shellcheck source=e2e/kind/lib.sh
source "${here}/lib.sh"

NS=paystream
total=${SECONDS}

stage "kind up" bash "${here}/up.sh"
KIND="$(kind_bin)"

# Images of the test build's binaries (dev profile, debug info stripped): after
# make test this compiles next to nothing, where a release build takes a cold
# CI run 15-20 minutes (docs/adr/0010-real-pods-on-kind.md, "Which binaries").
# PAYSTREAM_IMAGE_PROFILE=release tests the release images instead.
export PAYSTREAM_IMAGE_PROFILE="${PAYSTREAM_IMAGE_PROFILE:-dev}"
stage "images (${PAYSTREAM_IMAGE_PROFILE})" load_images

deploy() {
  local secret
  install_operator "${NS}"
  kk create namespace "${NS}" --dry-run=client -o yaml | kk apply -f - >/dev/null
  # The JWT secret of a pipeline that exists already is kept (a re-run).
  secret="$(kk -n "${NS}" get secret api-jwt -o jsonpath='{.data.secret}' 2>/dev/null | base64 -d || true)"
  [[ ${#secret} -ge 32 ]] || secret="$(openssl rand -hex 32)"
  pipeline_manifest "${secret}" >"${KIND_DIR}/pipeline.yaml"
  kk -n "${NS}" apply -f "${KIND_DIR}/pipeline.yaml" >/dev/null
  if ! kk -n "${NS}" wait paymentpipeline/demo --for condition=Ready --timeout 300s >/dev/null; then
    kk -n "${NS}" get paymentpipeline demo -o yaml >&2 || true
    kk -n "${NS}" get pods -o wide >&2 || true
    die "the pipeline did not become Ready within 300 s (its status is above)"
  fi
  # On a reused cluster the workloads roll to the images just loaded.
  local tag w deadline=$((SECONDS + 300))
  tag="$(cat "${IMAGE_TAG_FILE}")"
  for w in producer consumer api; do
    until [[ "$(kk -n "${NS}" get deployment "demo-${w}" -o jsonpath='{.spec.template.spec.containers[0].image}')" == *":${tag}" ]]; do
      ((SECONDS < deadline)) || die "demo-${w} does not run the images of tag ${tag} after 300 s"
      sleep 1
    done
    kk -n "${NS}" rollout status "deployment/demo-${w}" --timeout 300s >/dev/null
  done
  kk -n "${NS}" wait paymentpipeline/demo --for condition=Ready --timeout 300s >/dev/null
  kk -n "${NS}" get paymentpipelines
  kk -n "${NS}" get pods -o wide
}
stage "operator and pipeline" deploy

export KUBECONFIG="${KIND_KUBECONFIG}"
export KUBECTL; KUBECTL="$(find_kubectl)"
export HELM; HELM="$(bash "${REPO_ROOT}/charts/install-helm.sh")"
# A failed assertion reads better without a backtrace of the test harness.
export RUST_LIB_BACKTRACE=0
cd "${REPO_ROOT}"
stage "shared e2e suite" cargo test -p paystream-e2e --locked \
  --test cluster --test operator --test operator_resilience --test chart -- \
  --test-threads=1 --skip hpa_scales_a_deployment_on_emulated_cpu_usage

jwt="$(kk -n "${NS}" get secret api-jwt -o jsonpath='{.data.secret}' | base64 -d)"
stage "real-pod suite" env PAYSTREAM_E2E_REAL_PODS="${NS}" PAYSTREAM_E2E_JWT_SECRET="${jwt}" \
  PAYSTREAM_E2E_OPERATOR_NS="${OPERATOR_NS}" PAYSTREAM_E2E_NODE="${KIND_NODE}" \
  PAYSTREAM_E2E_DOCKER="${PAYSTREAM_DOCKER_CLI}" PAYSTREAM_E2E_IMAGE_TAG="$(cat "${IMAGE_TAG_FILE}")" cargo test -p paystream-e2e --locked --test realpods -- --test-threads=1 --nocapture

log "kind e2e passed in $((SECONDS - total)) s; the cluster is left up (make kind-down deletes it)"
