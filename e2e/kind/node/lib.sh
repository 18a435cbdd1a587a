# Shared settings and helpers of the kind node image (build.sh, gen-mod.sh)
# and of the e2e scripts that need kind: `source e2e/kind/node/lib.sh`, then
# "$(kind_bin)" and "$(node_image)". Sourced, never run.
# shellcheck shell=bash

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The local control plane's settings: KUBE_VERSION, PAYSTREAM_CACHE, CP_DIR,
# REPO_ROOT, build_key/bin_dir (its binaries, reused by the node image).
# shellcheck source=e2e/controlplane/lib.sh
source "${NODE_DIR}/../../controlplane/lib.sh"
# shellcheck source=e2e/kind/versions.env
source "${NODE_DIR}/../versions.env"

log() { printf '[kind-node] %s\n' "$*" >&2; }
die() { printf '[kind-node] ERROR: %s\n' "$*" >&2; exit 1; }

case ":${PATH}:" in *:/usr/local/go/bin:*) ;; *) [[ -x /usr/local/go/bin/go ]] && PATH="${PATH}:/usr/local/go/bin" ;; esac

# Two cache keys. bin_key: what the binaries (bins.sh) are made of: the pins,
# the control plane's build key (its binaries are reused), the Go toolchain,
# gcc, bins.sh and the Go modules under k8s/ and tools/. node_key: bin_key plus
# every other file of this folder that goes into the image (build.sh, lib.sh,
# rootfs/, images/), not the manifests/ the e2e scripts apply. Any change gives
# a new key, hence a rebuild of what depends on it.
bin_key() {
  (
    cd "${NODE_DIR}" || exit 1
    {
      cat ../versions.env "${CP_DIR}/versions.env"
      printf 'controlplane %s\n' "$(build_key)"
      go env GOVERSION GOOS GOARCH
      gcc -dumpfullversion 2>/dev/null || true
      find bins.sh k8s tools -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-12
  )
}

node_key() {
  (
    cd "${NODE_DIR}" || exit 1
    {
      printf 'bin %s\n' "$(bin_key)"
      find . -type f ! -path './manifests/*' ! -path './k8s/*' ! -path './tools/*' ! -name bins.sh ! -name '*.md' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-12
  )
}

# Cache layout: $PAYSTREAM_CACHE/kind-node/bin/<bin_key>/ holds the binaries,
# $PAYSTREAM_CACHE/kind-node/image/<node_key>/ the images and the node image.
bin_cache_dir() { printf '%s/kind-node/bin/%s' "${PAYSTREAM_CACHE}" "$(bin_key)"; }
node_cache_dir() { printf '%s/kind-node/image/%s' "${PAYSTREAM_CACHE}" "$(node_key)"; }

# The tag of the node image for the current key.
node_image() { printf 'paystream.local/kind-node:%s-%s' "${KUBE_VERSION}" "$(node_key)"; }

# The kind binary built for KIND_VERSION (by build.sh). Prints its path; fails
# with a hint if build.sh has not run for the current pins.
kind_bin() {
  local k
  k="$(bin_cache_dir)/kind"
  if [[ ! -x "${k}" ]]; then
    log "kind ${KIND_VERSION} is not built yet: run e2e/kind/node/build.sh"
    return 1
  fi
  printf '%s' "${k}"
}
