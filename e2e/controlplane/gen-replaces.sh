#!/usr/bin/env bash
# Regenerate the replace directives of e2e/controlplane/go.mod from the go.mod
# of the pinned k8s.io/kubernetes release.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver,
# ...) at v0.0.0 and points them at ./staging/src/... with local replaces, which
# do not apply to a module that depends on it. This script downloads the pinned
# k8s.io/kubernetes go.mod, lists every module it replaces with a ./staging
# path, and replaces each one in our go.mod with the published tag of the same
# release (v1.X.Y -> v0.X.Y). Nothing is typed in by hand: a version bump is
# `edit versions.env; bash e2e/controlplane/gen-replaces.sh`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/controlplane/versions.env
source "${here}/versions.env"
cd "${here}"

staging_version="v0.${KUBE_VERSION#v1.}"

# Locate the downloaded go.mod of the pinned release (downloads it if needed).
upstream_gomod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "${upstream_gomod}" || ! -f "${upstream_gomod}" ]]; then
  echo "gen-replaces: could not download go.mod of k8s.io/kubernetes@${KUBE_VERSION}" >&2
  exit 1
fi

# Lines look like `k8s.io/api => ./staging/src/k8s.io/api` inside a replace
# block, or `replace k8s.io/api => ./staging/...` on their own.
mapfile -t staging < <(awk '
  $1 == "replace" { $1 = ""; $0 = substr($0, 2) }
  $2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }
' "${upstream_gomod}" | sort -u)

if ((${#staging[@]} == 0)); then
  echo "gen-replaces: no ./staging replaces found in ${upstream_gomod}" >&2
  exit 1
fi

# Drop the replaces of a previous run, then write the new set.
go mod edit -json | awk -F'"' '/"Old": \{/ { in_old = 1 } in_old && /"Path"/ { print $4; in_old = 0 }' |
  while read -r old; do go mod edit -dropreplace="${old}"; done

args=(-require="k8s.io/kubernetes@${KUBE_VERSION}")
for mod in "${staging[@]}"; do
  args+=(-replace="${mod}=${mod}@${staging_version}")
done
go mod edit "${args[@]}"

echo "gen-replaces: k8s.io/kubernetes ${KUBE_VERSION}: ${#staging[@]} staging modules replaced with ${staging_version}"
