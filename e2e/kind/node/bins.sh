# The binaries of the kind node image, sourced by build.sh (which defines
# stage/stage_end/log/die): build_bins fills ${bins} = bin_cache_dir (lib.sh),
# keyed by bin_key: the pins, this file, the Go modules under k8s/ and tools/,
# the Go toolchain and the control plane's build key. Sets cp_bin, the
# control plane's binary folder. Each binary is built only if missing.
# shellcheck shell=bash

# go_build MODULE_DIR BINARY LDFLAGS PACKAGE...
go_build() {
  local mod="$1" name="$2" ldflags="$3"; shift 3
  [[ -x "${bins}/${name}" ]] && return 0
  # Static, without local paths; go.mod/go.sum are read-only pins.
  (cd "${NODE_DIR}/${mod}" &&
    CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly" \
      go build -ldflags "${ldflags}" -o "${bins}/${name}.tmp" "$@")
  mv "${bins}/${name}.tmp" "${bins}/${name}"
}

build_bins() {
  bins="$(bin_cache_dir)"
  mkdir -p "${bins}"

  stage tools "kind ${KIND_VERSION}, crictl ${CRICTL_VERSION}, CoreDNS ${COREDNS_VERSION} -> ${bins}"
  go_build tools/kind kind "-s -w" sigs.k8s.io/kind
  go_build tools/crictl crictl "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
    sigs.k8s.io/cri-tools/cmd/crictl
  go_build tools/coredns coredns "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" .
  stage_end

  stage controlplane "kube-apiserver, kube-controller-manager, kube-scheduler, etcd, metrics-server (e2e/controlplane/build.sh)"
  # e2e/controlplane/build.sh has no lock of its own: let a run that is already
  # going (make cluster-build) finish instead of building the same twice.
  if pgrep -f 'controlplane/build\.sh' >/dev/null; then
    log "waiting for the e2e/controlplane/build.sh that is running"
    while pgrep -f 'controlplane/build\.sh' >/dev/null; do sleep 10; done
  fi
  bash "${CP_DIR}/build.sh"
  # shellcheck disable=SC2034 # read by build.sh
  cp_bin="$(bin_dir)"
  stage_end

  # The control plane's recipe (e2e/controlplane/build.sh): the version stamps
  # of hack/lib/version.sh, with the release's publication time as build date,
  # so that `kubeadm version` and /version tell the truth.
  stage kube "kubelet, kubeadm, kubectl, kube-proxy ${KUBE_VERSION}"
  local minor release_time kube_ldflags pkg cmd kube_src
  minor="$(kube_minor)"
  release_time="$(cd "${NODE_DIR}/k8s" &&
    go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
  kube_ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    kube_ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    kube_ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
    kube_ldflags+=" -X ${pkg}.buildDate=${release_time:-1970-01-01T00:00:00Z}"
  done
  # The upstream main packages themselves (tool directives in k8s/go.mod).
  for cmd in kubelet kubeadm kubectl kube-proxy; do
    go_build k8s "${cmd}" "${kube_ldflags}" "k8s.io/kubernetes/cmd/${cmd}"
  done
  [[ "$("${bins}/kubeadm" version -o short)" == "${KUBE_VERSION}" ]] || die "kubeadm does not report ${KUBE_VERSION}"
  stage_end

  # pause: the C program of the release, static, as build/pause/Makefile does.
  stage pause "pause ${PAUSE_VERSION} (gcc -static)"
  if [[ ! -x "${bins}/pause" ]]; then
    kube_src="$(cd "${NODE_DIR}/k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
    [[ -f "${kube_src}/build/pause/linux/pause.c" ]] || die "pause.c not found in ${kube_src}"
    gcc -Os -Wall -Werror -static "-DVERSION=v${PAUSE_VERSION}-paystream" \
      -o "${bins}/pause.tmp" "${kube_src}/build/pause/linux/pause.c"
    strip "${bins}/pause.tmp"
    mv "${bins}/pause.tmp" "${bins}/pause"
  fi
  stage_end
}
