#!/usr/bin/env bash
# Installs the pinned protobuf codegen tools into <repo>/.run/bin (git-ignored):
# buf and the four protoc plugins, each built with `go install pkg@version`
# through the Go module proxy, so it works offline apart from that proxy.
#
# A tool is rebuilt only when its binary is missing or the version recorded in
# .run/bin/.versions differs from the pin below; when everything is up to date
# the script prints nothing. To change a version, edit the table below.
#
# Cost on a 2-core machine: buf ~100 s for a cold build (empty Go build cache;
# measured 95-100 s), the four plugins ~15 s together; later runs are no-ops.
#
# Usage: scripts/proto-tools.sh          install what is missing or outdated
#        scripts/proto-tools.sh --print  print the bin directory (for PATH)
set -euo pipefail
export GOTOOLCHAIN=go1.27.3

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.run/bin"
stamp="${bin_dir}/.versions"

# name  package@version
tools=(
  "buf                     github.com/bufbuild/buf/cmd/buf@v1.75.0"
  "protoc-gen-go           google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  "protoc-gen-go-grpc      google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
  "protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0"
  "protoc-gen-openapiv2    github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0"
)

if [[ "${1:-}" == "--print" ]]; then
  echo "${bin_dir}"
  exit 0
fi

mkdir -p "${bin_dir}"
touch "${stamp}"

# shellcheck source-path=SCRIPTDIR source=lib/lock.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/lock.sh"

# Serialise concurrent runs (e.g. `make -j`): one installer at a time (the same lock as tools.sh).
lock "${bin_dir}/.lock" 9 proto-tools

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
  if [[ -x "${bin_dir}/${name}" && "$(installed_version "${name}")" == "${pkg}" ]]; then
    continue
  fi
  echo "proto-tools: installing ${pkg}" >&2
  start=${SECONDS}
  # pkg@version mode ignores go.work and the repo's modules: the build is
  # exactly the tool's own pinned dependency graph.
  (cd "${bin_dir}" && GOFLAGS='' GOBIN="${bin_dir}" go install "${pkg}")
  record_version "${name}" "${pkg}"
  echo "proto-tools: ${name} ready in $((SECONDS - start))s" >&2
done
