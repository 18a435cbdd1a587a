#!/usr/bin/env bash
# shellcheck disable=SC2031 # engine/lib.sh's subshells do not change ours
# The four images (operator, producer, consumer, api), built offline: no
# registry is needed. The same Dockerfile targets as `docker build --target X .`,
# but from binaries built on this host and a runtime base made locally from
# Debian packages (docs/adr/0007-images.md, "Offline build path").
#
#   1. base    paystream.local/runtime-base:bookworm-<key>: mmdebstrap minbase +
#              ca-certificates, libssl3, zlib1g, user 65532 (images/runtime-base.sh);
#              the rootfs tarball is cached in $PAYSTREAM_CACHE/images, so a new
#              engine re-imports it without mmdebstrap. key = sha256 of that recipe.
#   2. cargo   PAYSTREAM_IMAGE_PROFILE=release (the default): `cargo build --release
#              --locked $BENCH_PACKAGES` (the Makefile's set, so the release cache
#              is shared with `make bench`). =dev: `cargo build --workspace
#              --exclude paystream-e2e --bins` (make test's set: after make test
#              it compiles next to nothing), debug info stripped in the image.
#              make kind-e2e uses dev; make bench-kind release
#              (docs/adr/0010-real-pods-on-kind.md, "Which binaries").
#   3. images  `docker build --target <t> --build-arg BINARIES=prebuilt
#              --build-arg RUNTIME_BASE=<base>` with a context holding only out/,
#              tagged ghcr.io/paystream/paystream-<t>:<workspace version> (the
#              operator's defaults); skipped when the image under that tag carries
#              the same inputs label (binary sha256 + Dockerfile + base).
#   4. check   `docker run --read-only --user 65532:65532 <image> --help` exits 0,
#              the configured user is 65532, sizes -> $PAYSTREAM_VAR/kind/images.json.
#
# stdout: the four image refs, one a line (for `kind load docker-image`); all
# logs go to stderr. Idempotent; a warm run takes seconds.
#
# Environment: PAYSTREAM_CACHE (~/.cache/paystream), CARGO_TARGET_DIR
# ($PAYSTREAM_CACHE/target), PAYSTREAM_VAR (<repo>/var), IMAGES_SKIP_CARGO=1
# (use the binaries already in $CARGO_TARGET_DIR/<profile dir>), IMAGES_SKIP_CHECK=1,
# PAYSTREAM_IMAGE_PROFILE (release|dev),
# PAYSTREAM_DOCKER (see engine/lib.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"

export PAYSTREAM_CACHE="${PAYSTREAM_CACHE:-${HOME}/.cache/paystream}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${PAYSTREAM_CACHE}/target}"
PAYSTREAM_VAR="${PAYSTREAM_VAR:-${repo}/var}"
export PATH="${HOME}/.cargo/bin:${PATH}"
# Keep in step with the Makefile's BENCH_PACKAGES (features unify over the
# package set: another set would rebuild the shared crates).
BENCH_PACKAGES="${BENCH_PACKAGES:--p paystream-producer -p paystream-consumer -p paystream-api -p paystream-operator -p paystream-bench}"

TARGETS=(operator producer consumer api)
IMAGE_REPOSITORY="ghcr.io/paystream/paystream" # operator/src/reconcile/names.rs
BASE_REPOSITORY="paystream.local/runtime-base"
INPUTS_LABEL="io.paystream.inputs"

log() { printf '[images] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# shellcheck source=e2e/kind/engine/lib.sh
source "${here}/engine/lib.sh"

sha() { sha256sum "$@" | cut -d' ' -f1; }

# stage NAME CMD...: runs CMD, records its wall time.
declare -a TIMES=()
stage() {
  local name=$1 t0=${SECONDS}
  shift
  log "---- ${name}"
  "$@"
  TIMES+=("${name}=$((SECONDS - t0))")
  log "---- ${name}: $((SECONDS - t0)) s"
}

version="$(awk '/^\[workspace\.package\]/ {f = 1; next} /^\[/ {f = 0}
  f && /^version *=/ {gsub(/"/, "", $3); print $3; exit}' "${repo}/Cargo.toml")"
[[ -n "${version}" ]] || die "no [workspace.package] version in ${repo}/Cargo.toml"

images_cache="${PAYSTREAM_CACHE}/images"
mkdir -p "${images_cache}" "${PAYSTREAM_VAR}/kind"
# One run at a time (two would race on the base tarball and the tags).
exec 8>"${images_cache}/images.lock"
flock -w 1800 8 || die "another images.sh holds ${images_cache}/images.lock"

# ---- engine -------------------------------------------------------------------
engine() {
  bash "${here}/engine/up.sh" >&2
  docker info >/dev/null 2>&1 || die "the container engine does not answer (DOCKER_HOST=${DOCKER_HOST:-<default>})"
  # The legacy builder builds every stage up to the target (the rust one too).
  [[ "${DOCKER_BUILDKIT:-}" == 1 ]] || docker buildx version >/dev/null 2>&1 ||
    die "BuildKit is needed (DOCKER_BUILDKIT=1 with a CLI below 23, or the buildx plugin)"
}

# ---- base ---------------------------------------------------------------------
base_recipe="${here}/images/runtime-base.sh"
base_key="$(sha "${base_recipe}" | cut -c1-16)"
base_ref="${BASE_REPOSITORY}:bookworm-${base_key}"
base_tar="${images_cache}/runtime-base-bookworm-${base_key}.tar"

base() {
  if docker image inspect "${base_ref}" >/dev/null 2>&1; then
    log "base ${base_ref}: present"
    return 0
  fi
  if [[ ! -s "${base_tar}" ]]; then
    log "base: mmdebstrap (Debian packages only; a few minutes) -> ${base_tar}"
    # mmdebstrap picks its output format from the name: keep the .tar.
    local tmp="${base_tar%.tar}.tmp$$.tar"
    rm -f "${tmp}"
    if ! bash "${base_recipe}" "${tmp}" >"${images_cache}/runtime-base.log" 2>&1; then
      tail -n 30 "${images_cache}/runtime-base.log" >&2
      rm -f "${tmp}"
      die "mmdebstrap failed; full log: ${images_cache}/runtime-base.log"
    fi
    mv -f "${tmp}" "${base_tar}"
    # Older recipes' tarballs are dead weight.
    find "${images_cache}" -maxdepth 1 -name 'runtime-base-bookworm-*.tar' ! -name "${base_tar##*/}" -delete
  else
    log "base: cached rootfs ${base_tar}"
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "${base_tar}" "${base_ref}" >/dev/null
  log "base ${base_ref}: imported"
}

# ---- cargo --------------------------------------------------------------------
PROFILE="${PAYSTREAM_IMAGE_PROFILE:-release}"
case "${PROFILE}" in
  release) bin_dir="${CARGO_TARGET_DIR}/release" ;;
  dev) bin_dir="${CARGO_TARGET_DIR}/debug" ;;
  *) die "PAYSTREAM_IMAGE_PROFILE=${PROFILE}: use release or dev" ;;
esac
cargo_build() {
  if [[ "${IMAGES_SKIP_CARGO:-0}" == 1 ]]; then
    log "IMAGES_SKIP_CARGO=1: using the binaries in ${bin_dir}"
  else
    bash "${repo}/scripts/toolchain.sh" >&2
    if [[ "${PROFILE}" == release ]]; then
      # shellcheck disable=SC2086 # BENCH_PACKAGES is a list of flags
      (cd "${repo}" && cargo build --release --locked ${BENCH_PACKAGES}) >&2
    else
      # Keep in step with the Makefile's test target (same package set, so
      # the same feature set and artifacts).
      (cd "${repo}" && cargo build --workspace --exclude paystream-e2e --bins --locked) >&2
    fi
  fi
  local t
  for t in "${TARGETS[@]}"; do
    [[ -x "${bin_dir}/paystream-${t}" ]] ||
      die "${bin_dir}/paystream-${t} is missing (run without IMAGES_SKIP_CARGO)"
  done
}

# ---- images -------------------------------------------------------------------
declare -A REF=() INPUTS=() BUILT=() BIN_BYTES=()
ctx=""
cleanup() { [[ -z "${ctx}" ]] || rm -rf "${ctx}"; }
trap cleanup EXIT

build_images() {
  local t dockerfile_sha bin_sha current
  dockerfile_sha="$(sha "${repo}/Dockerfile")"
  local -a todo=()
  for t in "${TARGETS[@]}"; do
    REF[$t]="${IMAGE_REPOSITORY}-${t}:${version}"
    bin_sha="$(sha "${bin_dir}/paystream-${t}")"
    BIN_BYTES[$t]="$(stat -c %s "${bin_dir}/paystream-${t}")"
    INPUTS[$t]="$(printf '%s\n' "target=${t}" "version=${version}" "profile=${PROFILE}" "binary=${bin_sha}" \
      "dockerfile=${dockerfile_sha}" "base=${base_ref}" | sha256sum | cut -c1-32)"
    current="$(docker image inspect -f "{{index .Config.Labels \"${INPUTS_LABEL}\"}}" "${REF[$t]}" 2>/dev/null || true)"
    if [[ "${current}" == "${INPUTS[$t]}" ]]; then
      BUILT[$t]=false
      log "${REF[$t]}: up to date (inputs ${INPUTS[$t]:0:12})"
    else
      todo+=("${t}")
    fi
  done
  ((${#todo[@]})) || return 0

  # A context with only the binaries: a few hundred MB less to send than the
  # repository, and nothing else can leak in.
  ctx="$(mktemp -d "${images_cache}/context.XXXXXX")"
  mkdir "${ctx}/out"
  for t in "${TARGETS[@]}"; do
    if [[ "${PROFILE}" == dev ]]; then
      # Debug info is most of a dev binary (300 MB for the operator).
      objcopy --strip-debug "${bin_dir}/paystream-${t}" "${ctx}/out/paystream-${t}"
    else
      cp "${bin_dir}/paystream-${t}" "${ctx}/out/"
    fi
  done
  local revision created
  revision="$(git -C "${repo}" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  [[ -z "$(git -C "${repo}" status --porcelain 2>/dev/null | head -n1)" ]] || revision="${revision}-dirty"
  created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for t in "${todo[@]}"; do
    local blog="${PAYSTREAM_VAR}/kind/images-build-${t}.log" t0=${SECONDS}
    if ! docker build --progress=plain \
      --target "${t}" \
      --build-arg BINARIES=prebuilt \
      --build-arg RUNTIME_BASE="${base_ref}" \
      --build-arg VERSION="${version}" \
      --build-arg REVISION="${revision}" \
      --build-arg CREATED="${created}" \
      --label "${INPUTS_LABEL}=${INPUTS[$t]}" \
      -t "${REF[$t]}" \
      -f "${repo}/Dockerfile" "${ctx}" >"${blog}" 2>&1; then
      tail -n 30 "${blog}" >&2
      die "docker build --target ${t} failed; full log: ${blog}"
    fi
    BUILT[$t]=true
    log "${REF[$t]}: built in $((SECONDS - t0)) s"
  done
}

# ---- check --------------------------------------------------------------------
declare -A SIZE=() USAGE=()
check_images() {
  local t out user
  for t in "${TARGETS[@]}"; do
    user="$(docker image inspect -f '{{.Config.User}}' "${REF[$t]}")"
    [[ "${user%%:*}" == 65532 ]] || die "${REF[$t]}: configured user is '${user}', not 65532"
    SIZE[$t]="$(docker image inspect -f '{{.Size}}' "${REF[$t]}")"
    [[ "${IMAGES_SKIP_CHECK:-0}" == 1 ]] && {
      USAGE[$t]="(not run)"
      continue
    }
    if ! out="$(docker run --rm --read-only --network none --user 65532:65532 "${REF[$t]}" --help 2>&1)"; then
      printf '%s\n' "${out}" >&2
      die "${REF[$t]} --help failed"
    fi
    grep -q '^Usage: ' <<<"${out}" || {
      printf '%s\n' "${out}" >&2
      die "${REF[$t]} --help printed no usage"
    }
    USAGE[$t]="$(grep -m1 '^Usage: ' <<<"${out}")"
  done
  local base_size
  base_size="$(docker image inspect -f '{{.Size}}' "${base_ref}")"

  {
    printf '%-9s %-56s %8s %8s  %-5s %s\n' target image "size MB" "bin MB" built "--help (read-only, uid 65532)"
    for t in "${TARGETS[@]}"; do
      printf '%-9s %-56s %8.1f %8.1f  %-5s %s\n' "${t}" "${REF[$t]}" \
        "$(awk -v b="${SIZE[$t]}" 'BEGIN {print b / 1e6}')" \
        "$(awk -v b="${BIN_BYTES[$t]}" 'BEGIN {print b / 1e6}')" "${BUILT[$t]}" "${USAGE[$t]}"
    done
    printf '%-9s %-56s %8.1f\n' base "${base_ref}" "$(awk -v b="${base_size}" 'BEGIN {print b / 1e6}')"
  } >&2

  local json="${PAYSTREAM_VAR}/kind/images.json" sep=""
  {
    printf '{\n  "version": "%s",\n  "profile": "%s",\n  "measured": "%s",\n' "${version}" "${PROFILE}" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '  "base": {"ref": "%s", "size_bytes": %s},\n  "images": [\n' "${base_ref}" "${base_size}"
    for t in "${TARGETS[@]}"; do
      printf '%s    {"target": "%s", "ref": "%s", "size_bytes": %s, "binary_bytes": %s, "inputs": "%s"}' \
        "${sep}" "${t}" "${REF[$t]}" "${SIZE[$t]}" "${BIN_BYTES[$t]}" "${INPUTS[$t]}"
      sep=$',\n'
    done
    printf '\n  ]\n}\n'
  } >"${json}.tmp"
  mv -f "${json}.tmp" "${json}"
  log "sizes written to ${json}"
}

total0=${SECONDS}
stage engine engine
stage base base
stage cargo cargo_build
stage images build_images
stage check check_images
log "profile ${PROFILE}; stage times (s): ${TIMES[*]} total=$((SECONDS - total0))"
for t in "${TARGETS[@]}"; do printf '%s\n' "${REF[$t]}"; done
