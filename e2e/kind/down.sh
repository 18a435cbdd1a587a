#!/usr/bin/env bash
# Delete the kind cluster that e2e/kind/up.sh created.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../controlplane/lib.sh"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-paystream}"
command -v kind >/dev/null || die "kind is not installed"
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  kind delete cluster --name "${KIND_CLUSTER_NAME}"
else
  log "kind cluster ${KIND_CLUSTER_NAME} does not exist; nothing to delete"
fi
rm -f "${PAYSTREAM_VAR}/kind/kubeconfig"
