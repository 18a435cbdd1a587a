#!/usr/bin/env bash
# make bench-kind: PaymentPipelines on real pods of the kind cluster, against
# the same number of plain pods (a benchmark: it measures, never fails on a
# figure). docs/benchmarks.md, "Real pods on kind", says how to read it.
#
#   1. precondition: the kind cluster is up (`make kind-up`, the Makefile's
#      prerequisite); the four images are loaded (load_images, cached) and the
#      chart (re)installs the operator watching every namespace;
#   2. bench/kind/bench.py: for N in 1 and 10, BENCH_KIND_REPEAT rounds (2):
#      N PaymentPipelines in a fresh namespace, timed from `kubectl apply` to
#      all Ready, and the ceiling: 3N Deployments of the node's pause image,
#      timed to all Available; node and operator memory; namespace deletion;
#   3. bench/results/kind-<UTC stamp>.json and .md.
#
# Afterwards the operator is put back as found: if it watched one namespace
# (make kind-e2e installs it watching `paystream`), the chart is re-installed
# with that value. Interrupted (Ctrl-C, TERM), the benchmark deletes its
# namespaces (label paystream.io/bench=kind) and topics before it exits.
#
# Knobs: BENCH_KIND_REPEAT (2), BENCH_KIND_COUNTS ("1 10"), BENCH_KIND_TABLES
# (empty: the example's four, which the consumer needs), BENCH_KIND_PARTITIONS (1),
# BENCH_KIND_READY_TIMEOUT (420 s), BENCH_KIND_DELETE_TIMEOUT (240 s),
# BENCH_KIND_IDLE_S (5 s of idle memory before each apply), BENCH_KIND_POLL_S
# (0.5). `run.sh --dry-run` prints the manifests of a round and touches nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=e2e/controlplane/lib.sh
source "${repo}/e2e/controlplane/lib.sh"
# shellcheck source=e2e/kind/lib.sh
source "${repo}/e2e/kind/lib.sh"
log() { printf '[bench-kind] %s\n' "$*" >&2; }
die() { printf '[bench-kind] ERROR: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-kind.XXXXXX")"

if [[ "${1:-}" == --dry-run ]]; then
  kind_gateway() { printf '<gateway>'; }
  pipeline_manifest "<jwt-secret>" >"${work}/pipeline.yaml"
  python3 "${here}/bench.py" --manifest "${work}/pipeline.yaml" --dry-run
  rm -rf "${work}"
  exit 0
fi

total=${SECONDS}
KIND="$(kind_bin)" || die "kind is not built: make kind-up"
"${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}" ||
  die "no kind cluster ${KIND_CLUSTER_NAME}: make kind-up"
kk get --raw /readyz >/dev/null 2>&1 || die "the kind cluster's apiserver does not answer (make kind-status)"

helm="$(bash "${REPO_ROOT}/charts/install-helm.sh")"
# What the operator watched before: restored at the end.
watch_found="(not installed)"
if values="$("${helm}" --kubeconfig "${KIND_KUBECONFIG}" get values paystream-operator \
  --namespace "${OPERATOR_NS}" --all -o json 2>/dev/null)"; then
  watch_found="$(python3 -c 'import json,sys; print((json.load(sys.stdin).get("operator") or {}).get("watchNamespace") or "")' <<<"${values}")"
fi
log "the operator watched: '${watch_found}'"

py=""
# shellcheck disable=SC2317 # run by the EXIT trap
restore() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n "${py}" ]] && kill -0 "${py}" 2>/dev/null; then
    kill -TERM "${py}" 2>/dev/null || true
    wait "${py}" 2>/dev/null || true
  fi
  # The benchmark cleans up itself; this only catches what a kill -9 left.
  if kk get namespaces -l paystream.io/bench=kind -o name 2>/dev/null | grep -q .; then
    log "deleting the namespaces left with label paystream.io/bench=kind"
    kk delete namespaces -l paystream.io/bench=kind --wait=false >/dev/null 2>&1 || true
  fi
  if [[ "${watch_found}" != "(not installed)" && -n "${watch_found}" ]]; then
    stage "operator back to watching ${watch_found}" install_operator "${watch_found}" ||
      log "could not re-install the operator watching ${watch_found}: make kind-e2e re-installs it"
  fi
  rm -rf "${work}"
  log "total $((SECONDS - total)) s"
  exit "${rc}"
}
trap restore EXIT

# The figures are of release binaries whatever the caller's environment says
# (make kind-e2e uses dev ones).
PAYSTREAM_IMAGE_PROFILE=release stage images load_images
stage "operator watching every namespace" install_operator ""

node_id="$(docker inspect -f '{{.Id}}' "${KIND_NODE}")"
node_image_ref="$(docker inspect -f '{{.Config.Image}}' "${KIND_NODE}")"
node_image_bytes="$(docker image inspect -f '{{.Size}}' "${node_image_ref}" 2>/dev/null || echo 0)"
# The pause image the node carries in containerd (the sandbox image).
pause_image="$(docker exec "${KIND_NODE}" crictl images -o json | python3 -c '
import json, sys
want = sys.argv[1]
tags = [t for i in json.load(sys.stdin).get("images", []) for t in i.get("repoTags") or [] if "/pause:" in t]
print(next((t for t in tags if t.endswith(":" + want)), tags[0] if tags else ""))' "${PAUSE_VERSION}")"
[[ -n "${pause_image}" ]] || die "no pause image in the node's containerd (crictl images)"
log "node ${KIND_NODE} (${node_id:0:12}), image ${node_image_ref} (${node_image_bytes} bytes), ceiling image ${pause_image}"

pipeline_manifest "$(openssl rand -hex 32)" >"${work}/pipeline.yaml"

t0=${SECONDS}
python3 "${here}/bench.py" \
  --kubectl "$(find_kubectl)" --kubeconfig "${KIND_KUBECONFIG}" \
  --manifest "${work}/pipeline.yaml" \
  --cluster "${KIND_CLUSTER_NAME}" --node "${KIND_NODE}" --node-container-id "${node_id}" \
  --node-image "${node_image_ref}" --node-image-bytes "${node_image_bytes}" \
  --docker "${PAYSTREAM_DOCKER_CLI}" --pause-image "${pause_image}" \
  --images-json "${KIND_DIR}/images.json" --operator-ns "${OPERATOR_NS}" \
  --watch-found "${watch_found}" &
py=$!
# Signals go to the benchmark, which cleans up before it exits.
trap 'kill -TERM "${py}" 2>/dev/null || true' INT TERM HUP
rc=0
while :; do
  wait "${py}" && rc=0 || rc=$?
  kill -0 "${py}" 2>/dev/null || break
done
py=""
log "stage benchmark: $((SECONDS - t0)) s"
exit "${rc}"
