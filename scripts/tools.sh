#!/usr/bin/env bash
# Installs the pinned supply-chain and lint tools into <repo>/.run/bin (git-ignored), each built
# with `go install pkg@version` through the Go module proxy, the way scripts/proto-tools.sh installs
# the protobuf tools (same bin directory, same .versions stamp and lock).
#
# A tool is rebuilt only when its binary is missing or the version recorded in .run/bin/.versions
# differs from the pin below; when everything is up to date the script prints nothing.
#
# Cost of a cold build on a 2-core machine (empty module and build caches): govulncheck 20-85 s
# (the latter with the toolchain download), indexdb 70-85 s (it drags in the vulndb module's cloud
# dependencies), golangci-lint 80-140 s.
#
# Usage: scripts/tools.sh [NAME...]   install the named tools (default: all) if missing or outdated
#        scripts/tools.sh --print     print the bin directory (for PATH)
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.run/bin"
stamp="${bin_dir}/.versions"

# The vulnerability database is the golang.org/x/vulndb module at this version (scripts/vuln.sh
# reads the same pin); its cmd/indexdb turns the module's OSV files into a database.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

# name           package@version
tools=(
  "govulncheck   golang.org/x/vuln/cmd/govulncheck@v1.9.0"
  "indexdb       golang.org/x/vulndb/cmd/indexdb@${VULNDB_VERSION}"
  "golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0"
)

if [[ "${1:-}" == "--print" ]]; then
  echo "${bin_dir}"
  exit 0
fi
if [[ "${1:-}" == "--vulndb-version" ]]; then
  echo "${VULNDB_VERSION}"
  exit 0
fi

wanted=("$@")
is_wanted() {
  [[ ${#wanted[@]} -eq 0 ]] && return 0
  local w
  for w in "${wanted[@]}"; do [[ "$w" == "$1" ]] && return 0; done
  return 1
}
for w in "${wanted[@]}"; do
  if ! printf '%s\n' "${tools[@]}" | awk '{print $1}' | grep -qx -- "$w"; then
    echo "tools: unknown tool $w" >&2
    exit 2
  fi
done

mkdir -p "${bin_dir}"
touch "${stamp}"

# shellcheck source-path=SCRIPTDIR source=lib/lock.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/lock.sh"

# Serialise concurrent runs (e.g. `make -j`, or proto-tools.sh at the same time).
lock "${bin_dir}/.lock" 9 tools

installed_version() { # name -> recorded package@version, or nothing
  awk -v n="$1" '$1 == n { print $2 }' "${stamp}"
}

record_version() { # name package@version
  local tmp
  tmp="$(mktemp "${stamp}.XXXXXX")"
  awk -v n="$1" '$1 != n' "${stamp}" >"${tmp}"
  printf '%s %s\n' "$1" "$2" >>"${tmp}"
  sort -o "${tmp}" "${tmp}"
  mv "${tmp}" "${stamp}"
}

for entry in "${tools[@]}"; do
  read -r name pkg <<<"${entry}"
  is_wanted "${name}" || continue
  if [[ -x "${bin_dir}/${name}" && "$(installed_version "${name}")" == "${pkg}" ]]; then
    continue
  fi
  echo "tools: installing ${pkg}" >&2
  start=${SECONDS}
  # pkg@version mode ignores go.work and the repo's modules: the build is exactly the tool's own
  # pinned dependency graph.
  (cd "${bin_dir}" && GOFLAGS='' GOBIN="${bin_dir}" go install "${pkg}")
  record_version "${name}" "${pkg}"
  echo "tools: ${name} ready in $((SECONDS - start))s" >&2
done
