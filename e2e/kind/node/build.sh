#!/usr/bin/env bash
# Build paystream's kind node image offline, from the pinned Go modules and
# Debian packages only (no container registry is reachable here), and load it
# into the container engine (e2e/kind/engine). Prints the image's tag last.
#
# Everything is cached under $PAYSTREAM_CACHE/kind-node/ (keys: bin_key and
# node_key in lib.sh; the pins, the control plane's build key, the Go
# toolchain and every build input in this folder):
#   bin/<bin_key>/    kind, kubelet, kubeadm, kubectl, kube-proxy, crictl,
#              coredns, pause (bins.sh)
#   image/<node_key>/
#     images/  the images the node needs, as docker archives (docker load and
#              ctr import read them), tagged as `kubeadm config images list`
#              prints them, plus paystream.local/metrics-server
#   node-image.tar  the node image as a docker archive; image.env its tag, id,
#              size; times.txt the time of each stage of the build that made it
# A run with the same inputs only makes sure the image is in the engine
# (docker load from node-image.tar if not).
#
# The node image is not made with docker import/run/commit: its root
# filesystem is assembled in a directory (mmdebstrap + our files + binaries),
# the component images are imported into that tree's containerd store by a
# short-lived containerd on the host (its own socket and state, the tree's
# /var/lib/containerd as root), and the tree is written out as a one-layer
# docker archive with the config kind needs. So the engine is needed only for
# the final `docker load`, and the image has one layer.
#
# Usage: e2e/kind/node/build.sh [--no-engine]   (--no-engine: stop before loading)
set -euo pipefail
# shellcheck source=e2e/kind/node/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

no_engine=0
[[ "${1:-}" == --no-engine ]] && no_engine=1

command -v go >/dev/null || die "go is not on PATH (/usr/local/go/bin)"
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap, the containerd store of the node's tree)"
for tool in mmdebstrap gcc tar sha256sum; do
  command -v "${tool}" >/dev/null || die "${tool} is missing (apt-get install mmdebstrap gcc)"
done

key="$(node_key)"
out="$(node_cache_dir)"
tag="$(node_image)"
mkdir -p "${out}/images"
# One build per key at a time.
exec 8>"${out}.lock"
flock -w 3600 8 || die "another build holds ${out}.lock"

# Stage timing: `stage NAME` starts one, `stage_end` prints it; cold times are
# kept in times.txt.
stage_name="" stage_start=0
stage() { stage_name="$1"; stage_start=${SECONDS}; log "stage ${stage_name}: $2"; }
stage_end() {
  local secs=$((SECONDS - stage_start))
  log "stage ${stage_name}: done in ${secs}s${1:+ ($1)}"
  # A build resumed after a failure keeps the times of the stages it had done.
  grep -q "^${stage_name} " "${out}/times.txt.new" 2>/dev/null ||
    printf '%s %ss\n' "${stage_name}" "${secs}" >>"${out}/times.txt.new"
}

# docker_archive OUT TAG CONFIG LAYER...: writes a docker archive (the format
# of `docker save`, which `docker load` and `ctr images import` both read) of
# an image with the given layer tars, bottom first. CONFIG is the JSON object
# of the image config's "config" (Entrypoint, Env, ...).
docker_archive() {
  local dest="$1" image_tag="$2" cfg="$3"; shift 3
  local dir sum layer diffs="" layers="" config csum
  dir="$(mktemp -d "${dest}.XXXXXX")"
  for layer in "$@"; do
    sum="$(sha256sum "${layer}" | cut -d' ' -f1)"
    mkdir -p "${dir}/${sum}"
    ln "${layer}" "${dir}/${sum}/layer.tar" 2>/dev/null || cp "${layer}" "${dir}/${sum}/layer.tar"
    diffs+="${diffs:+,}\"sha256:${sum}\""
    layers+="${layers:+,}\"${sum}/layer.tar\""
  done
  config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"config\":${cfg},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[${diffs}]}}"
  csum="$(printf '%s' "${config}" | sha256sum | cut -d' ' -f1)"
  printf '%s' "${config}" >"${dir}/${csum}.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":[%s]}]' "${csum}" "${image_tag}" "${layers}" >"${dir}/manifest.json"
  tar -C "${dir}" --remove-files -cf "${dest}.tmp" .
  rm -rf "${dir}"
  mv "${dest}.tmp" "${dest}"
}

# A layer tar of a directory tree, as root-owned files.
layer_of() { tar -C "$1" --numeric-owner --owner=0 --group=0 --sort=name -cf "$2" .; }

# Debian's archive with its updates and security suites, as on the host.
MIRRORS=("deb http://deb.debian.org/debian ${DEBIAN_SUITE} main"
  "deb http://deb.debian.org/debian ${DEBIAN_SUITE}-updates main"
  "deb http://deb.debian.org/debian-security ${DEBIAN_SUITE}-security main")

ENV_PATH='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'

# The engine, once the node image is ready to load.
engine_up() {
  local engine_dir="${REPO_ROOT}/e2e/kind/engine"
  [[ -f "${engine_dir}/lib.sh" && -f "${engine_dir}/up.sh" ]] ||
    die "e2e/kind/engine is missing; the node image is built in ${out} (rerun when the engine exists)"
  bash "${engine_dir}/up.sh" >&2
  # shellcheck source=e2e/kind/engine/lib.sh
  source "${engine_dir}/lib.sh"
}

load_image() {
  if docker image inspect "${tag}" >/dev/null 2>&1; then
    log "image ${tag} is in the engine"
  else
    log "loading ${tag} from ${out}/node-image.tar"
    docker load -i "${out}/node-image.tar" >&2
  fi
  docker image inspect "${tag}" >/dev/null || die "${tag} is not in the engine after docker load"
}

# ---------------------------------------------------------------------------
# Fast path: everything for this key is built.
if [[ -f "${out}/image.env" && -f "${out}/node-image.tar" ]]; then
  start=${SECONDS}
  log "node image for key ${key} is cached in ${out}"
  if ((!no_engine)); then
    engine_up
    load_image
  fi
  # shellcheck disable=SC1091
  source "${out}/image.env"
  log "stage times of the build that made it: $(tr '\n' ' ' <"${out}/times.txt")"
  log "image ${tag}: ${NODE_IMAGE_SIZE_MB} MB (archive ${NODE_ARCHIVE_SIZE_MB} MB); this run: $((SECONDS - start))s"
  printf '%s\n' "${tag}"
  exit 0
fi
work="${out}/work"
mkdir -p "${work}"

# The binaries (bins.sh), in their own cache directory: unchanged pins reuse
# them whatever else changed here.
bins="" cp_bin="" # set by build_bins
# shellcheck source=e2e/kind/node/bins.sh
source "${NODE_DIR}/bins.sh"
build_bins

# ---------------------------------------------------------------------------
# The images kubeadm asks for, FROM scratch (static binaries), except
# kube-proxy, which runs iptables, ip6tables, conntrack (and nft, to clean up
# after the nftables mode): a minimal Debian with those under it. The tags are
# the ones kubeadm itself prints.
stage images "component images"
rm -rf "${out}"/images/*.tar.* # left by an interrupted docker_archive
mapfile -t wanted < <("${bins}/kubeadm" config images list --kubernetes-version "${KUBE_VERSION}")
((${#wanted[@]} >= 7)) || die "kubeadm config images list printed: ${wanted[*]}"
# image_layer NAME SRC:DEST...: a layer with the given files (DEST absolute).
image_layer() {
  local name="$1" spec src dest tree
  shift
  tree="${work}/layer-${name}"
  rm -rf "${tree}"
  for spec in "$@"; do
    src="${spec%%:*}" dest="${spec#*:}"
    mkdir -p "${tree}$(dirname "${dest}")"
    cp -a "${src}" "${tree}${dest}"
  done
  layer_of "${tree}" "${work}/layer-${name}.tar"
  rm -rf "${tree}"
}
for image in "${wanted[@]}"; do
  name="${image##*/}" name="${name%%:*}" version="${image##*:}"
  archive="${out}/images/${name}.tar"
  [[ -f "${archive}" ]] && continue
  case "${name}" in
    kube-apiserver | kube-controller-manager | kube-scheduler)
      image_layer "${name}" "${cp_bin}/${name}:/usr/local/bin/${name}"
      docker_archive "${archive}" "${image}" "{\"Env\":[${ENV_PATH}],\"Entrypoint\":[\"/usr/local/bin/${name}\"]}" \
        "${work}/layer-${name}.tar"
      ;;
    etcd)
      # NOTE: the binary is the etcd e2e/controlplane builds (go.etcd.io/etcd
      # at the version k8s.io/kubernetes requires, 3.5.21), under the tag
      # kubeadm asks for (3.5.24-0 for v1.33.13): kubeadm only runs `etcd`.
      image_layer etcd "${cp_bin}/etcd:/usr/local/bin/etcd"
      docker_archive "${archive}" "${image}" "{\"Env\":[${ENV_PATH}],\"Entrypoint\":[\"/usr/local/bin/etcd\"]}" \
        "${work}/layer-etcd.tar"
      ;;
    coredns)
      [[ "${version}" == "${COREDNS_VERSION}" ]] ||
        die "kubeadm wants CoreDNS ${version}, versions.env pins ${COREDNS_VERSION}: update it and run gen-mod.sh"
      image_layer coredns "${bins}/coredns:/coredns"
      docker_archive "${archive}" "${image}" '{"Entrypoint":["/coredns"],"ExposedPorts":{"53/tcp":{},"53/udp":{}}}' \
        "${work}/layer-coredns.tar"
      ;;
    pause)
      [[ "${version}" == "${PAUSE_VERSION}" ]] ||
        die "kubeadm wants pause ${version}, versions.env pins ${PAUSE_VERSION} (also in rootfs/etc/containerd/config.toml)"
      image_layer pause "${bins}/pause:/pause"
      docker_archive "${archive}" "${image}" '{"Entrypoint":["/pause"]}' "${work}/layer-pause.tar"
      ;;
    kube-proxy)
      if [[ ! -f "${work}/debian-iptables.tar" ]]; then
        # path-excludes: no docs, man pages or locales in the image.
        # shellcheck disable=SC2016 # $1 is mmdebstrap's, for the hook
        mmdebstrap --variant=minbase --format=tar --include=iptables,nftables,conntrack --skip=output/dev \
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
          --dpkgopt='path-exclude=/usr/share/locale/*' \
          --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
          "${DEBIAN_SUITE}" "${work}/debian-iptables.tar.tmp" "${MIRRORS[@]}" >&2
        mv "${work}/debian-iptables.tar.tmp" "${work}/debian-iptables.tar"
      fi
      tree="${work}/layer-kube-proxy"
      rm -rf "${tree}"
      mkdir -p "${tree}/usr/local/bin" "${tree}/usr/local/sbin"
      cp "${bins}/kube-proxy" "${tree}/usr/local/bin/"
      cp "${NODE_DIR}/images/kube-proxy/iptables-wrapper" "${tree}/usr/local/sbin/"
      for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -s iptables-wrapper "${tree}/usr/local/sbin/${t}"
      done
      layer_of "${tree}" "${work}/layer-kube-proxy.tar"
      rm -rf "${tree}"
      docker_archive "${archive}" "${image}" "{\"Env\":[${ENV_PATH}],\"Entrypoint\":[\"/usr/local/bin/kube-proxy\"]}" \
        "${work}/debian-iptables.tar" "${work}/layer-kube-proxy.tar"
      ;;
    *) die "kubeadm asks for an image this build does not know: ${image}" ;;
  esac
  log "  ${image}"
done
ms_image="paystream.local/metrics-server:${METRICS_SERVER_VERSION}"
if [[ ! -f "${out}/images/metrics-server.tar" ]]; then
  image_layer metrics-server "${cp_bin}/metrics-server:/metrics-server"
  docker_archive "${out}/images/metrics-server.tar" "${ms_image}" '{"Entrypoint":["/metrics-server"],"User":"65534"}' \
    "${work}/layer-metrics-server.tar"
  log "  ${ms_image}"
fi
rm -f "${work}"/layer-*.tar
stage_end

# ---------------------------------------------------------------------------
# The node's root filesystem: Debian with systemd, containerd, runc and the
# CNI plugins, what kubelet and kubeadm run (iptables, conntrack, ethtool,
# socat, mount, util-linux, ...), our files (rootfs/), the binaries, and the
# images in containerd's store.
stage rootfs "node root filesystem (mmdebstrap ${DEBIAN_SUITE} + files + images)"
tree="${work}/rootfs"
if [[ ! -f "${work}/rootfs.done" ]]; then
  rm -rf "${tree}"
  packages=(systemd containerd runc containernetworking-plugins iptables nftables conntrack ethtool socat
    iproute2 util-linux mount kmod procps ca-certificates libseccomp2 e2fsprogs)
  mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "${DEBIAN_SUITE}" "${tree}" "${MIRRORS[@]}" >&2

  # Our files: entrypoint, units, containerd/CNI/crictl config, kind manifests.
  cp -a "${NODE_DIR}/rootfs/." "${tree}/"
  chown -R 0:0 "${tree}/etc/systemd/system" "${tree}/kind" "${tree}/usr/local/bin/entrypoint"
  # The binaries; kind and kubeadm expect kubelet, kubeadm, kubectl in /usr/bin.
  for b in kubelet kubeadm kubectl; do install -m 0755 "${bins}/${b}" "${tree}/usr/bin/${b}"; done
  install -m 0755 "${bins}/crictl" "${tree}/usr/local/bin/crictl"
  # kind reads the Kubernetes version of the node from here.
  printf '%s\n' "${KUBE_VERSION}" >"${tree}/kind/version"
  mkdir -p "${tree}/etc/kubernetes/manifests"

  # systemd as init in a container (systemd.io/CONTAINER_INTERFACE): only our
  # services, no getty/udev/timers; no kernel log in the journal.
  ln -sf /lib/systemd/systemd "${tree}/sbin/init"
  rm -f "${tree}"/etc/systemd/system/*.wants/* "${tree}"/lib/systemd/system/multi-user.target.wants/* \
    "${tree}"/lib/systemd/system/local-fs.target.wants/* "${tree}"/lib/systemd/system/sockets.target.wants/*udev* \
    "${tree}"/lib/systemd/system/sockets.target.wants/*initctl* "${tree}"/lib/systemd/system/basic.target.wants/* \
    "${tree}"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service
  echo "ReadKMsg=no" >>"${tree}/etc/systemd/journald.conf"
  chroot "${tree}" systemctl enable containerd.service kubelet.service >&2
  # binfmt registrations would be global to the host kernel.
  chroot "${tree}" systemctl mask systemd-binfmt.service >&2
  # A fresh machine id per node (the entrypoint makes it).
  : >"${tree}/etc/machine-id"
  rm -rf "${tree}"/var/lib/apt/lists/* "${tree}"/var/cache/apt/* "${tree}"/var/log/*.log \
    "${tree}"/var/cache/debconf/*-old "${tree}"/var/lib/dpkg/*-old
  touch "${work}/rootfs.done"
fi

# The images into the tree's containerd store (namespace k8s.io, which the CRI
# plugin uses), without unpacking: unpacking needs overlay mounts, and the
# CRI plugin unpacks an image into its snapshotter when a container first
# uses it. A private containerd on the host with the tree's store as root; its
# socket and state live in a short temporary directory; only the store's
# plugins run (no CRI, no /opt plugin).
if [[ ! -f "${work}/images.done" ]]; then
  ctrd="$(mktemp -d /tmp/kind-node-ctrd.XXXXXX)"
  cat >"${ctrd}/config.toml" <<EOF
version = 2
root = "${tree}/var/lib/containerd"
state = "${ctrd}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${ctrd}/containerd.sock"
[ttrpc]
  address = "${ctrd}/containerd.sock.ttrpc"
EOF
  "${tree}/usr/bin/containerd" --config "${ctrd}/config.toml" >"${ctrd}/containerd.log" 2>&1 &
  ctrd_pid=$!
  # shellcheck disable=SC2064 # expand now
  trap "kill ${ctrd_pid} 2>/dev/null || true; wait ${ctrd_pid} 2>/dev/null || true; rm -rf '${ctrd}'" EXIT
  ctr_() { "${tree}/usr/bin/ctr" --address "${ctrd}/containerd.sock" --namespace k8s.io "$@"; }
  for _ in $(seq 1 60); do ctr_ version >/dev/null 2>&1 && break; sleep 0.5; done
  ctr_ version >/dev/null || { cat "${ctrd}/containerd.log" >&2; die "the build's containerd did not start"; }
  for archive in "${out}"/images/*.tar; do
    ctr_ images import --no-unpack --all-platforms --digests "${archive}" >&2
  done
  ctr_ images list -q | grep -v '@sha256:' | sed 's/^/[kind-node]   in the node: /' >&2
  kill "${ctrd_pid}"
  wait "${ctrd_pid}" 2>/dev/null || true
  trap - EXIT
  rm -rf "${ctrd}"
  touch "${work}/images.done"
fi
stage_end

# ---------------------------------------------------------------------------
# The image: the tree as one layer, plus what kind needs in the config:
# systemd must know it is in a container (container=docker), stops on
# SIGRTMIN+3 (SIGTERM would make it re-execute), and the entrypoint runs
# before /sbin/init.
stage archive "node image archive"
if [[ ! -f "${out}/node-image.tar" ]]; then
  # /dev, /proc, /sys, /run and /tmp are mounted by the engine and by kind.
  tar -C "${tree}" --numeric-owner --xattrs --xattrs-include='security.capability' \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' --exclude='./tmp/*' \
    -cf "${work}/node-layer.tar" .
  docker_archive "${out}/node-image.tar" "${tag}" \
    "{\"Env\":[${ENV_PATH},\"container=docker\"],\"Entrypoint\":[\"/usr/local/bin/entrypoint\",\"/sbin/init\"],\"StopSignal\":\"SIGRTMIN+3\"}" \
    "${work}/node-layer.tar"
  rm -f "${work}/node-layer.tar"
fi
archive_mb=$(($(stat -c %s "${out}/node-image.tar") / 1024 / 1024))
stage_end "${archive_mb} MB"

# ---------------------------------------------------------------------------
if ((no_engine)); then
  log "built ${out}/node-image.tar; not loaded (--no-engine)"
  exit 0
fi
stage load "docker load into the engine"
engine_up
load_image
image_id="$(docker image inspect -f '{{.Id}}' "${tag}")"
image_mb=$(($(docker image inspect -f '{{.Size}}' "${tag}") / 1000 / 1000))
stage_end

# The total of the stages, also for a build resumed after a failure.
total="$(awk '{ sub(/s$/, "", $2); t += $2 } END { print t }' "${out}/times.txt.new")"
printf 'total %ss\n' "${total}" >>"${out}/times.txt.new"
mv "${out}/times.txt.new" "${out}/times.txt"
cat >"${out}/image.env" <<EOF
NODE_IMAGE=${tag}
NODE_IMAGE_ID=${image_id}
NODE_IMAGE_SIZE_MB=${image_mb}
NODE_ARCHIVE_SIZE_MB=${archive_mb}
EOF
rm -rf "${work}"
# Older keys are dead weight now (their images stay in the engine until pruned).
for old in "${PAYSTREAM_CACHE}"/kind-node/image/*/; do
  [[ "${old%/}" == "${out}" ]] || rm -rf "${old}" "${old%/}.lock"
done
for old in "${PAYSTREAM_CACHE}"/kind-node/bin/*/; do
  [[ "${old%/}" == "${bins}" ]] || rm -rf "${old}"
done
log "stage times: $(tr '\n' ' ' <"${out}/times.txt")"
log "image ${tag}: ${image_mb} MB in the engine, archive ${archive_mb} MB"
printf '%s\n' "${tag}"
