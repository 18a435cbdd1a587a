# paystream images: one image per deployable, all from this one file.
#
#   docker build --target operator -t ghcr.io/paystream/paystream-operator:0.1.0 .
#   docker build --target producer -t ghcr.io/paystream/paystream-producer:0.1.0 .
#   docker build --target consumer -t ghcr.io/paystream/paystream-consumer:0.1.0 .
#   docker build --target api      -t ghcr.io/paystream/paystream-api:0.1.0 .
#
# The tag is the workspace version (Cargo.toml), which is the tag the operator
# uses by default for the workloads. The four targets share one `build` stage,
# so building them in a row compiles the workspace once. BuildKit is required
# (the default builder of Docker 23+, DOCKER_BUILDKIT=1 before that); it builds
# only the stages a target needs. See docs/adr/0007-images.md.
#
# Offline (no registry reachable; e2e/kind/images.sh does this): the same four
# targets from binaries built on the host and a locally made runtime base,
#
#   docker build --target api \
#     --build-arg BINARIES=prebuilt \
#     --build-arg RUNTIME_BASE=paystream.local/runtime-base:bookworm-<key> \
#     -f Dockerfile <dir holding out/paystream-{operator,producer,consumer,api}>
#
# so neither `rust:*` nor `debian:*` is pulled and nothing is installed.
# No `# syntax=` line on purpose: it makes BuildKit fetch the frontend image
# from Docker Hub; the builtin frontend reads this file.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
# Where the binaries come from: `build` (compile them here) or `prebuilt`
# (the build context's out/ directory).
ARG BINARIES=build
# The runtime's base: an image that already has ca-certificates, libssl3,
# zlib1g and the user/group 65532. The default is the `base-slim` stage below
# (debian slim plus those); e2e/kind/images.sh passes a local mmdebstrap base.
ARG RUNTIME_BASE=base-slim

# ---- build: compile the four binaries once -----------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# librdkafka is compiled by the rdkafka crate with cmake and links OpenSSL and
# zlib (the same list as scripts/toolchain.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake pkg-config g++ libssl-dev libsasl2-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the toolchain; the image's cargo installs it if the
# image's own differs. The caches only speed up rebuilds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin paystream-operator --bin paystream-producer \
      --bin paystream-consumer --bin paystream-api \
 && mkdir -p /out \
 && cp target/release/paystream-operator target/release/paystream-producer \
       target/release/paystream-consumer target/release/paystream-api /out/

# ---- prebuilt: binaries built outside (context: out/<the four binaries>) -----
# Only used with --build-arg BINARIES=prebuilt; glibc/libssl3 of the machine
# that built them must match the runtime base (Debian 12 bookworm).
FROM scratch AS prebuilt
COPY out/ /out/

FROM ${BINARIES} AS binaries

# ---- base-slim: the default runtime base -------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS base-slim
# The binaries link libssl3 and zlib dynamically; rustls needs no CA files, but
# librdkafka's TLS (OpenSSL) uses the system's CA certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot

# ---- runtime: small Debian, shared libraries only, non-root ------------------
FROM ${RUNTIME_BASE} AS runtime
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /
# Nothing is written to the root filesystem: it runs with
# readOnlyRootFilesystem: true (the chart and the operator set it).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.source="https://github.com/paystream/paystream" \
      org.opencontainers.image.url="https://github.com/paystream/paystream" \
      org.opencontainers.image.vendor="paystream" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# Operations server (/metrics, /healthz, /readyz) of every binary.
EXPOSE 9090

# ---- one target per deployable -----------------------------------------------
FROM runtime AS operator
COPY --from=binaries /out/paystream-operator /usr/local/bin/paystream-operator
LABEL org.opencontainers.image.title="paystream-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs paystream PaymentPipelines"
ENTRYPOINT ["/usr/local/bin/paystream-operator"]

FROM runtime AS producer
COPY --from=binaries /out/paystream-producer /usr/local/bin/paystream-producer
LABEL org.opencontainers.image.title="paystream-producer" \
      org.opencontainers.image.description="MariaDB/MySQL binlog to Kafka, exactly once"
ENTRYPOINT ["/usr/local/bin/paystream-producer"]

FROM runtime AS consumer
COPY --from=binaries /out/paystream-consumer /usr/local/bin/paystream-consumer
LABEL org.opencontainers.image.title="paystream-consumer" \
      org.opencontainers.image.description="Kafka change topics to the Redis read model"
ENTRYPOINT ["/usr/local/bin/paystream-consumer"]

FROM runtime AS api
COPY --from=binaries /out/paystream-api /usr/local/bin/paystream-api
LABEL org.opencontainers.image.title="paystream-api" \
      org.opencontainers.image.description="The payment API: writes, and reads from the Redis read model"
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/paystream-api"]
