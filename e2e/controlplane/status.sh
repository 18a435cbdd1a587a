#!/usr/bin/env bash
# Show the state of the local control plane: each component's process, the
# apiserver's readiness and version, the nodes and the metrics API.
# Exits 0 when every component runs and the apiserver is ready, 1 otherwise.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kubeconfig="${CLUSTER_DIR}/kubeconfig"
healthy=1
for c in "${COMPONENTS[@]}"; do
  if component_running "${c}"; then
    printf '%-24s running (pid %s)\n' "${c}" "$(cat "$(pid_file "${c}")")"
  else
    printf '%-24s not running\n' "${c}"
    healthy=0
  fi
done

if ((healthy)); then
  if curl -sf --max-time 5 --cacert "${CLUSTER_DIR}/pki/ca.crt" \
    --cert "${CLUSTER_DIR}/pki/admin.crt" --key "${CLUSTER_DIR}/pki/admin.key" \
    "https://127.0.0.1:${APISERVER_PORT}/readyz" >/dev/null; then
    echo "kube-apiserver /readyz: ok"
  else
    echo "kube-apiserver /readyz: failing"
    healthy=0
  fi
fi

if ((healthy)) && [[ -x "${CLUSTER_DIR}/bin/kubectl" ]]; then
  k() { "${CLUSTER_DIR}/bin/kubectl" --kubeconfig "${kubeconfig}" "$@"; }
  echo
  k version || true
  echo
  k get nodes -o wide || true
  echo
  k get apiservice v1beta1.metrics.k8s.io || true
  echo
  echo "export KUBECONFIG=${kubeconfig} PATH=${CLUSTER_DIR}/bin:\$PATH; kubectl get nodes"
fi
echo "logs: ${CLUSTER_DIR}/logs/<component>.log"
((healthy))
