#!/usr/bin/env bash
# Start paystream's local Kubernetes control plane, without Docker:
#   etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler
#   -> kwok (fake nodes, pods, resource usage) -> metrics-server.
# Binaries come from build.sh (cached outside the clone; built on first use).
# Runtime state lives in var/cluster/ (certs, etcd data, logs, pids,
# kubeconfig) and is recreated on every fresh start. Everything listens on
# 127.0.0.1 only; ports are set by the environment (see lib.sh for defaults).
#
# Idempotent: when the cluster is already up it says so and exits 0; when it
# is half up (a component died) it is torn down and started again.
set -euo pipefail
# shellcheck source=e2e/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pki="${CLUSTER_DIR}/pki"
kubeconfigs="${CLUSTER_DIR}/kubeconfigs"
manifests="${CLUSTER_DIR}/manifests"
logs="${CLUSTER_DIR}/logs"
admin_kubeconfig="${CLUSTER_DIR}/kubeconfig"
server="https://127.0.0.1:${APISERVER_PORT}"
start_time=${SECONDS}

# ---------------------------------------------------------------- idempotence

running=0
for c in "${COMPONENTS[@]}"; do component_running "${c}" && running=$((running + 1)); done
if ((running == ${#COMPONENTS[@]})); then
  log "cluster is already up (${server}); nothing to do"
  echo "export KUBECONFIG=${admin_kubeconfig} PATH=${CLUSTER_DIR}/bin:\$PATH; kubectl get nodes"
  exit 0
fi
if ((running > 0)); then
  log "cluster is partly up (${running}/${#COMPONENTS[@]} components); restarting it"
  bash "${CP_DIR}/down.sh"
fi

# ---------------------------------------------------------------- binaries

bash "${CP_DIR}/build.sh"
bin="$(bin_dir)"
ETCD_BINARY="${ETCD_BINARY:-${bin}/etcd}"
for b in kube-apiserver kube-controller-manager kube-scheduler kwok metrics-server; do
  [[ -x "${bin}/${b}" ]] || die "missing ${bin}/${b}; run: bash e2e/controlplane/build.sh"
done
[[ -x "${ETCD_BINARY}" ]] || die "missing etcd binary ${ETCD_BINARY}"
command -v openssl >/dev/null || die "openssl is needed for the certificates (apt-get install -y openssl)"
command -v curl >/dev/null || die "curl is needed for the readiness probes (apt-get install -y curl)"

KUBECTL_BIN="$(find_kubectl)"
[[ -n "${KUBECTL_BIN}" ]] ||
  die "no kubectl within one minor version of ${KUBE_VERSION} found; install one or set KUBECTL=/path/to/kubectl"

# ---------------------------------------------------------------- ports

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT KWOK_PORT METRICS_SERVER_PORT; do
  if port_busy "${!p}"; then
    die "port ${!p} (${p}) on 127.0.0.1 is already in use; free it or set ${p}=<other port>"
  fi
done

# From here on a command that fails (the awaited probes report through
# fail_component instead) stops whatever was started: no half cluster is
# left running behind an error.
set -E
trap 'log "failed at line ${LINENO}: ${BASH_COMMAND}; stopping what was started"; bash "${CP_DIR}/down.sh" >&2 || true' ERR

# ---------------------------------------------------------------- state dir

# A fresh cluster every time: nothing of a previous run is reused.
[[ "${CLUSTER_DIR}" == /*/* ]] || die "CLUSTER_DIR must be an absolute path below the root, not '${CLUSTER_DIR}'"
rm -rf "${CLUSTER_DIR}"
mkdir -p "${pki}" "${kubeconfigs}" "${manifests}" "${logs}" "${CLUSTER_DIR}/pids" \
  "${CLUSTER_DIR}/etcd" "${CLUSTER_DIR}/bin" "${CLUSTER_DIR}/kwok"
chmod 700 "${pki}" "${CLUSTER_DIR}/etcd"
ln -sf "${KUBECTL_BIN}" "${CLUSTER_DIR}/bin/kubectl"
kubectl() { "${KUBECTL_BIN}" --kubeconfig "${admin_kubeconfig}" "$@"; }

# ---------------------------------------------------------------- certificates

log "generating certificates in ${pki}"

# new_ca NAME CN
new_ca() {
  openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/$1.key" 2>/dev/null
  openssl req -x509 -new -key "${pki}/$1.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "${pki}/$1.crt" 2>/dev/null
}

# new_cert NAME CA SUBJECT USAGE [SAN]   (USAGE: serverAuth, clientAuth or both)
new_cert() {
  local name="$1" ca="$2" subject="$3" usage="$4" san="${5:-}" ext
  openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/${name}.key" 2>/dev/null
  openssl req -new -key "${pki}/${name}.key" -subj "${subject}" -out "${pki}/${name}.csr" 2>/dev/null
  ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=${usage}"
  [[ -n "${san}" ]] && ext+=$'\n'"subjectAltName=${san}"
  openssl x509 -req -in "${pki}/${name}.csr" -CA "${pki}/${ca}.crt" -CAkey "${pki}/${ca}.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -sha256 \
    -extfile <(printf '%s\n' "${ext}") -out "${pki}/${name}.crt" 2>/dev/null
  rm -f "${pki}/${name}.csr"
}

new_ca ca paystream-local-ca
new_ca front-proxy-ca paystream-local-front-proxy-ca
# Service-account token signing key pair (kube-apiserver signs, verifies;
# the controller manager's token controller signs legacy token secrets).
openssl genrsa -out "${pki}/sa.key" 2048 2>/dev/null
openssl rsa -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null

new_cert apiserver ca "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
new_cert apiserver-kubelet-client ca "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" clientAuth
new_cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
new_cert admin ca "/O=system:masters/CN=kubernetes-admin" clientAuth
new_cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
new_cert scheduler ca "/CN=system:kube-scheduler" clientAuth
# kwok plays every kubelet; it gets its own user with RBAC (below), and a
# serving certificate for its kubelet-like endpoint (metrics, logs, exec).
new_cert kwok-client ca "/CN=kwok-controller" clientAuth
new_cert kwok-serving ca "/CN=kwok" serverAuth "IP:127.0.0.1,DNS:localhost"
new_cert metrics-server-client ca "/CN=metrics-server" clientAuth
new_cert metrics-server-serving ca "/CN=metrics-server" serverAuth \
  "IP:127.0.0.1,DNS:localhost,DNS:metrics-server.kube-system.svc"
chmod 600 "${pki}"/*.key

# write_kubeconfig FILE USER CERT
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: paystream-local
  cluster:
    server: ${server}
    certificate-authority-data: $(base64 -w0 "${pki}/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "${pki}/$3.crt")
    client-key-data: $(base64 -w0 "${pki}/$3.key")
contexts:
- name: paystream-local
  context:
    cluster: paystream-local
    user: $2
current-context: paystream-local
EOF
  chmod 600 "$1"
}
write_kubeconfig "${admin_kubeconfig}" kubernetes-admin admin
write_kubeconfig "${kubeconfigs}/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
write_kubeconfig "${kubeconfigs}/scheduler.kubeconfig" system:kube-scheduler scheduler
write_kubeconfig "${kubeconfigs}/kwok.kubeconfig" kwok-controller kwok-client
write_kubeconfig "${kubeconfigs}/metrics-server.kubeconfig" metrics-server metrics-server-client

# ---------------------------------------------------------------- helpers

# start NAME BINARY ARGS... : run in its own session, output to the log, pid recorded.
start() {
  local name="$1"; shift
  log "starting ${name} (log: ${logs}/${name}.log)"
  setsid "$@" >"${logs}/${name}.log" 2>&1 </dev/null &
  echo $! >"$(pid_file "${name}")"
}

# Fail with the log tail when a component died or did not become ready.
fail_component() {
  local name="$1"
  log "${name} failed to start; last lines of ${logs}/${name}.log:"
  tail -n 30 "${logs}/${name}.log" >&2 || true
  log "logs of all components: ${logs}/; stopping what was started"
  bash "${CP_DIR}/down.sh" >&2 || true
  exit 1
}

# await NAME TIMEOUT PROBE... : poll PROBE while the process of NAME lives.
await() {
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    component_alive "${name}" || fail_component "${name}"
    if ((SECONDS >= deadline)); then
      log "${name}: not ready after ${timeout}s"
      fail_component "${name}"
    fi
    sleep 0.5
  done
}

https_ok() { # URL [client cert name]
  local url="$1" cert="${2:-admin}"
  curl -sf --max-time 5 --cacert "${pki}/ca.crt" --cert "${pki}/${cert}.crt" --key "${pki}/${cert}.key" "${url}"
}

# ---------------------------------------------------------------- etcd

start etcd "${ETCD_BINARY}" \
  --name paystream \
  --data-dir "${CLUSTER_DIR}/etcd" \
  --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
  --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
  --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster "paystream=http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster-state new \
  --unsafe-no-fsync \
  --log-level warn
etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:${ETCD_CLIENT_PORT}/health" | grep -q '"health":"true"'; }
await etcd 60 etcd_healthy

# /debug/pprof on the apiserver, controller manager and scheduler, for
# finding where the control plane's CPU goes under a benchmark
# (CONTROLPLANE_PROFILING=true; off by default, as in production).
profiling="${CONTROLPLANE_PROFILING:-false}"

# ---------------------------------------------------------------- kube-apiserver

start kube-apiserver "${bin}/kube-apiserver" \
  --advertise-address 127.0.0.1 \
  --bind-address 127.0.0.1 \
  --secure-port "${APISERVER_PORT}" \
  --endpoint-reconciler-type none \
  --etcd-servers "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
  --tls-cert-file "${pki}/apiserver.crt" \
  --tls-private-key-file "${pki}/apiserver.key" \
  --client-ca-file "${pki}/ca.crt" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --allow-privileged=true \
  --service-cluster-ip-range 10.96.0.0/16 \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "${pki}/sa.pub" \
  --service-account-signing-key-file "${pki}/sa.key" \
  --kubelet-client-certificate "${pki}/apiserver-kubelet-client.crt" \
  --kubelet-client-key "${pki}/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "${pki}/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --requestheader-client-ca-file "${pki}/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "${pki}/front-proxy-client.crt" \
  --proxy-client-key-file "${pki}/front-proxy-client.key" \
  --enable-aggregator-routing=false \
  --profiling="${profiling}"
await kube-apiserver 180 https_ok "${server}/readyz"

# ---------------------------------------------------------------- controllers

# The controller manager's client rate limit: upstream's default (20 QPS,
# burst 30, per controller) unless CONTROLLER_MANAGER_KUBE_API_QPS / _BURST
# say otherwise. `make bench-operator` raises it so that 1,000 pipelines'
# Deployments are not paced by it alone (see docs/benchmarks.md).
kcm_rate=()
if [[ -n "${CONTROLLER_MANAGER_KUBE_API_QPS:-}" ]]; then
  kcm_rate+=(--kube-api-qps "${CONTROLLER_MANAGER_KUBE_API_QPS}")
fi
if [[ -n "${CONTROLLER_MANAGER_KUBE_API_BURST:-}" ]]; then
  kcm_rate+=(--kube-api-burst "${CONTROLLER_MANAGER_KUBE_API_BURST}")
fi

start kube-controller-manager "${bin}/kube-controller-manager" \
  --kubeconfig "${kubeconfigs}/controller-manager.kubeconfig" \
  --authentication-kubeconfig "${kubeconfigs}/controller-manager.kubeconfig" \
  --authorization-kubeconfig "${kubeconfigs}/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "${CONTROLLER_MANAGER_PORT}" \
  --client-ca-file "${pki}/ca.crt" \
  --requestheader-client-ca-file "${pki}/front-proxy-ca.crt" \
  --root-ca-file "${pki}/ca.crt" \
  --service-account-private-key-file "${pki}/sa.key" \
  --cluster-signing-cert-file "${pki}/ca.crt" \
  --cluster-signing-key-file "${pki}/ca.key" \
  --use-service-account-credentials=true \
  --service-cluster-ip-range 10.96.0.0/16 \
  --leader-elect=false \
  --profiling="${profiling}" \
  "${kcm_rate[@]}"
await kube-controller-manager 60 curl -sfk --max-time 2 "https://127.0.0.1:${CONTROLLER_MANAGER_PORT}/healthz"

start kube-scheduler "${bin}/kube-scheduler" \
  --kubeconfig "${kubeconfigs}/scheduler.kubeconfig" \
  --authentication-kubeconfig "${kubeconfigs}/scheduler.kubeconfig" \
  --authorization-kubeconfig "${kubeconfigs}/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "${SCHEDULER_PORT}" \
  --client-ca-file "${pki}/ca.crt" \
  --requestheader-client-ca-file "${pki}/front-proxy-ca.crt" \
  --leader-elect=false \
  --profiling="${profiling}"
await kube-scheduler 60 curl -sfk --max-time 2 "https://127.0.0.1:${SCHEDULER_PORT}/healthz"

# Service accounts work end to end once the service-account controller has
# made the default account and the root-CA publisher its config map.
await kube-controller-manager 60 kubectl -n default get serviceaccount default
await kube-controller-manager 60 kubectl -n default get configmap kube-root-ca.crt

# ---------------------------------------------------------------- kwok

# The stage, metric and CRD manifests ship inside the kwok module; build.sh
# copied them next to the binary (see kwok-manifests/).
kwok_manifests="${bin}/kwok-manifests"

# RBAC for kwok (it is every kubelet) and for metrics-server, the kwok CRDs
# whose objects tests create, the metrics APIService served by the local
# metrics-server process through an ExternalName service on 127.0.0.1.
cat >"${manifests}/rbac.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: paystream:kwok-controller
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kwok-controller
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: metrics-server
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: metrics-server
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extension-apiserver-authentication-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: metrics-server
---
# Aggregated into the admin/edit/view roles, as upstream metrics-server does.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
EOF
kubectl apply --server-side -f "${manifests}/rbac.yaml" >/dev/null

kubectl apply --server-side -f "${kwok_manifests}/crds.yaml" >/dev/null
# Polled, not one long wait: a CRD the apiserver has not given a status yet
# makes `kubectl wait` fail at once (".status.conditions accessor error"),
# which stopped a restart in the benchmark of 2026-11-27 23:23.
await kube-apiserver 60 kubectl wait --for condition=Established --timeout 5s \
  crd/resourceusages.kwok.x-k8s.io crd/clusterresourceusages.kwok.x-k8s.io

# kwok's own configuration: which objects it drives through which stages
# (nodes become Ready and keep a lease; pods get an IP and turn Running and
# Ready; deleted pods go away) and the kubelet-like /metrics/resource it serves.
{
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  enableCRDs: [ResourceUsage, ClusterResourceUsage]
  # Values of kwok's own in-cluster configuration: a config file replaces
  # the built-in defaults, so the worker counts must be given.
  nodeLeaseParallelism: 4
  nodePlayStageParallelism: 4
  podPlayStageParallelism: 4
  podsOnNodeSyncParallelism: 4
  # WatchList (sendInitialEvents) is off by default in 1.33.
  enablePodsOnNodeSyncStreamWatch: false
  cidr: 10.244.0.0/16
EOF
  for f in "${kwok_manifests}"/stages/*.yaml "${kwok_manifests}/metrics-resource.yaml"; do
    printf -- '---\n'
    cat "${f}"
  done
} >"${CLUSTER_DIR}/kwok/kwok.yaml"

start kwok "${bin}/kwok" \
  --config "${CLUSTER_DIR}/kwok/kwok.yaml" \
  --kubeconfig "${kubeconfigs}/kwok.kubeconfig" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 \
  --node-port "${KWOK_PORT}" \
  --server-address "127.0.0.1:${KWOK_PORT}" \
  --tls-cert-file "${pki}/kwok-serving.crt" \
  --tls-private-key-file "${pki}/kwok-serving.key" \
  --node-lease-duration-seconds 40
await kwok 60 curl -sf --max-time 2 --cacert "${pki}/ca.crt" "https://127.0.0.1:${KWOK_PORT}/healthz"

# The default emulated usage: what a pod's kwok.x-k8s.io/usage-cpu and
# usage-memory annotations say (1m / 1Mi without them). Tests may add their own
# ResourceUsage objects, which take precedence for the pod they name.
kubectl apply --server-side -f "${kwok_manifests}/usage-from-annotation.yaml" >/dev/null

# The fake nodes (see kwok_nodes_manifest in lib.sh).
kwok_nodes_manifest 0 >"${manifests}/nodes.yaml"
kubectl apply -f "${manifests}/nodes.yaml" >/dev/null
await kwok 120 kubectl wait --for condition=Ready --timeout 5s node --all

# ---------------------------------------------------------------- metrics-server

start metrics-server "${bin}/metrics-server" \
  --bind-address 127.0.0.1 \
  --secure-port "${METRICS_SERVER_PORT}" \
  --tls-cert-file "${pki}/metrics-server-serving.crt" \
  --tls-private-key-file "${pki}/metrics-server-serving.key" \
  --kubeconfig "${kubeconfigs}/metrics-server.kubeconfig" \
  --authentication-kubeconfig "${kubeconfigs}/metrics-server.kubeconfig" \
  --authorization-kubeconfig "${kubeconfigs}/metrics-server.kubeconfig" \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-use-node-status-port \
  --kubelet-certificate-authority "${pki}/ca.crt" \
  --kubelet-request-timeout 5s \
  --metric-resolution 10s
await metrics-server 60 curl -sf --max-time 2 --cacert "${pki}/ca.crt" "https://127.0.0.1:${METRICS_SERVER_PORT}/livez"

cat >"${manifests}/metrics-apiservice.yaml" <<EOF
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports:
  - name: https
    port: ${METRICS_SERVER_PORT}
    protocol: TCP
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels: {k8s-app: metrics-server}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 "${pki}/ca.crt")
  service:
    name: metrics-server
    namespace: kube-system
    port: ${METRICS_SERVER_PORT}
EOF
kubectl apply --server-side -f "${manifests}/metrics-apiservice.yaml" >/dev/null
await metrics-server 120 kubectl wait --for condition=Available --timeout 5s apiservice/v1beta1.metrics.k8s.io

# ---------------------------------------------------------------- done

log "cluster is up in $((SECONDS - start_time))s: Kubernetes ${KUBE_VERSION}, ${KWOK_NODES} kwok nodes, metrics-server"
log "  kubeconfig: ${admin_kubeconfig}"
log "  kubectl:    ${CLUSTER_DIR}/bin/kubectl -> ${KUBECTL_BIN}"
log "  logs:       ${logs}/<component>.log"
echo
echo "export KUBECONFIG=${admin_kubeconfig} PATH=${CLUSTER_DIR}/bin:\$PATH; kubectl get nodes"
