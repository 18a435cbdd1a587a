#!/usr/bin/env bash
# shellcheck disable=SC2016 # the hooks are run by mmdebstrap's shell, $1 = the chroot
# The runtime base of the offline images: Debian 12 minbase plus exactly what
# the release binaries load (ca-certificates, libssl3, zlib1g; see
# docs/adr/0007-images.md) and the user/group 65532 "nonroot", as a rootfs
# tarball for `docker import`. Only Debian packages are fetched (no registry).
# e2e/kind/images.sh keys the cached tarball by the sha256 of this file, so
# any change here (packages, hooks) makes a new base.
#
#   bash e2e/kind/images/runtime-base.sh OUT.tar
set -euo pipefail
out=${1:?usage: runtime-base.sh OUT.tar}

suite=bookworm
packages=ca-certificates,libssl3,zlib1g
mirror=${PAYSTREAM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${PAYSTREAM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

# merged-usr the way debootstrap (and so the debian images) do it; without
# it apt picks `usrmerge`, which pulls in perl (+40 MB).
# Docs, man pages and translations are never read in a container; keep the
# copyright files (licences). mmdebstrap's own cleanup then drops the apt
# lists and caches (~125 MB; nothing runs apt in these images). Leave the
# chroot's /tmp alone: mmdebstrap keeps its apt config there until the end.
mmdebstrap --variant=minbase --include="$packages" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
  --customize-hook='echo "nonroot:!::" >> "$1/etc/gshadow"' \
  --customize-hook='echo "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "nonroot:!:19000::::::" >> "$1/etc/shadow"' \
  --customize-hook='rm -rf "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/etc/machine-id' \
  --customize-hook='chroot "$1" dpkg-query -W ca-certificates libssl3 zlib1g >&2' \
  "$suite" "$out" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main"
