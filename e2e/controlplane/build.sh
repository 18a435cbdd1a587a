#!/usr/bin/env bash
# Build the local control plane from the pinned Go modules into the cache
# outside the clone: kube-apiserver, kube-controller-manager, kube-scheduler
# and etcd (module e2e/controlplane), kwok (tools/kwok) and metrics-server
# (tools/metrics-server). Idempotent: does nothing when the binaries for the
# current pins (versions.env + every go.mod/go.sum/main.go, see build_key)
# are already in $PAYSTREAM_CACHE/k8s/<version>/<key>/bin.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v go >/dev/null || die "go is not on PATH (needs Go >= 1.26 for kwok ${KWOK_VERSION})"

out="$(bin_dir)"
want=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok metrics-server kwok-manifests/crds.yaml)

complete=1
for b in "${want[@]}"; do [[ -e "${out}/${b}" ]] || complete=0; done
if ((complete)); then
  log "binaries for ${KUBE_VERSION} are cached in ${out}"
  exit 0
fi

# Build into a scratch folder next to the final one, then rename, so an
# interrupted build never leaves a half-filled cache entry behind.
parent="$(dirname "${out}")"
mkdir -p "${parent}"
tmp="$(mktemp -d "${parent}/.build.XXXXXX")"
chmod 755 "${tmp}"
trap 'rm -rf "${tmp}"' EXIT

# Version stamps, as hack/lib/version.sh sets them, so /version tells the
# truth. The module proxy does not carry the release commit, so gitCommit stays
# empty; the build date is the release's publication time (reproducible).
minor="$(kube_minor)"
release_time="$(cd "${CP_DIR}" &&
  go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=${release_time:-1970-01-01T00:00:00Z}"
done

# Static binaries; go.mod/go.sum are read-only inputs (the pins), never edited.
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"

start=${SECONDS}
log "building kube-apiserver, kube-controller-manager, kube-scheduler, etcd ${KUBE_VERSION} -> ${out}"
(cd "${CP_DIR}" && go build -ldflags "${ldflags}" -o "${tmp}/" ./cmd/...)

log "building kwok ${KWOK_VERSION}"
(cd "${CP_DIR}/tools/kwok" && go build -ldflags "-s -w" -o "${tmp}/kwok" sigs.k8s.io/kwok/cmd/kwok)

log "building metrics-server ${METRICS_SERVER_VERSION}"
(cd "${CP_DIR}/tools/metrics-server" && go build -ldflags "-s -w" -o "${tmp}/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)

# The manifests that ship inside the kwok module, used as they are: the
# default stages (nodes turn Ready and keep a lease; pods turn Running and
# Ready, complete, get deleted), the kubelet-like /metrics/resource Metric, the
# annotation-driven ClusterResourceUsage and the usage CRDs.
kwok_src="$(cd "${CP_DIR}/tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
[[ -d "${kwok_src}/kustomize" ]] || die "kwok module source not found (${kwok_src})"
mkdir -p "${tmp}/kwok-manifests/stages"
cp "${kwok_src}/kustomize/stage/node/fast/node-initialize.yaml" \
  "${kwok_src}/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
  "${kwok_src}/kustomize/stage/pod/fast/pod-ready.yaml" \
  "${kwok_src}/kustomize/stage/pod/fast/pod-complete.yaml" \
  "${kwok_src}/kustomize/stage/pod/fast/pod-delete.yaml" \
  "${tmp}/kwok-manifests/stages/"
cp "${kwok_src}/kustomize/metrics/resource/metrics-resource.yaml" \
  "${kwok_src}/kustomize/metrics/usage/usage-from-annotation.yaml" \
  "${tmp}/kwok-manifests/"
{
  cat "${kwok_src}/kustomize/crd/bases/kwok.x-k8s.io_resourceusages.yaml"
  printf -- '---\n'
  cat "${kwok_src}/kustomize/crd/bases/kwok.x-k8s.io_clusterresourceusages.yaml"
} >"${tmp}/kwok-manifests/crds.yaml"
chmod -R u+w "${tmp}/kwok-manifests"

for b in "${want[@]}"; do [[ -e "${tmp}/${b}" ]] || die "build produced no ${b}"; done
rm -rf "${out}"
mv "${tmp}" "${out}"
trap - EXIT
# Older builds of the same version (other keys) are dead weight now.
for old in "${PAYSTREAM_CACHE}/k8s/${KUBE_VERSION}"/*/; do
  [[ "${old%/}" == "$(dirname "${out}")" ]] || rm -rf "${old}"
done
log "built in $((SECONDS - start))s: ${out}"
