#!/usr/bin/env bash
# Install the pinned Helm CLI from the Go module proxy into
# $PAYSTREAM_CACHE/bin (outside the clone). Idempotent: an existing binary of
# the pinned version is kept. Prints the binary's path on stdout.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-${HOME}/.cache/paystream}"
bin_dir="${PAYSTREAM_CACHE}/bin"
helm="${bin_dir}/helm"
export PATH="/usr/local/go/bin:${PATH}"

if [[ -x "${helm}" ]] && "${helm}" version --template '{{.Version}}' 2>/dev/null | grep -qx "${HELM_VERSION}"; then
  echo "${helm}"
  exit 0
fi
command -v go >/dev/null || { echo "install-helm: go is not installed (expected /usr/local/go/bin/go)" >&2; exit 1; }
mkdir -p "${bin_dir}"
echo "install-helm: go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION} -> ${bin_dir}" >&2
# Helm reads its version from ldflags; without them `helm version` prints the
# module's default, so stamp the pinned one.
GOBIN="${bin_dir}" go install \
  -ldflags "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
  "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"${helm}" version --template '{{.Version}}' | grep -qx "${HELM_VERSION}" || {
  echo "install-helm: ${helm} does not report ${HELM_VERSION}: $("${helm}" version --short)" >&2
  exit 1
}
echo "${helm}"
