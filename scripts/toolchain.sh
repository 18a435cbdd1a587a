#!/usr/bin/env bash
# Installs the system packages the Rust build needs: librdkafka is built from
# source by the rdkafka crate (cmake), linking the system's OpenSSL, SASL, zstd,
# zlib and curl. Idempotent and quiet when everything is present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../stack/lib.sh"
apt_install curl build-essential cmake pkg-config libssl-dev libsasl2-dev libzstd-dev zlib1g-dev libcurl4-openssl-dev
command -v cargo >/dev/null || die "cargo is not installed; install Rust with rustup (rust-toolchain.toml pins the version)"
