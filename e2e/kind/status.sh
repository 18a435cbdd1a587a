#!/usr/bin/env bash
# One line each: the node image of the current pins, the kind cluster, the
# stack's exposure at the gateway, kwok.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/controlplane/lib.sh
source "${here}/../controlplane/lib.sh"
# shellcheck source=e2e/kind/lib.sh
source "${here}/lib.sh"

image="$(node_image)"
if docker image inspect "${image}" >/dev/null 2>&1; then
  echo "node image: ${image} ($(docker image inspect -f '{{.Size}}' "${image}" | awk '{printf "%.0f MB", $1/1e6}'))"
else
  echo "node image: ${image} not built (make kind-up builds it)"
fi
if [[ -n "${KIND}" ]] && "${KIND}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  echo "cluster: ${KIND_CLUSTER_NAME} up; KUBECONFIG=${KIND_KUBECONFIG}"
else
  echo "cluster: ${KIND_CLUSTER_NAME} not running"
fi
bash "${here}/hoststack.sh" env 2>/dev/null | tr '\n' ' ' | sed 's/^/stack at the gateway: /; s/ $/\n/' || echo "stack at the gateway: not exposed"
if [[ -f "${KWOK_PID}" ]] && kill -0 "$(cat "${KWOK_PID}")" 2>/dev/null; then echo "kwok: pid $(cat "${KWOK_PID}")"; else echo "kwok: not running"; fi
